"""The job report: what happened to every item, by language, strategy and rejection reason,
and the judge's health (position bias, score spread, parse failures, agreement). Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from taxoforge.llm.metering import add_usage
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "add_comparisons",
    "cohen_kappa",
    "count_items",
    "golden_agreement",
    "judge_health",
    "merge_health",
    "usage_of",
]


def count_items(report: pb.SelectionReport, judgments: Iterable[pb.Judgment]) -> None:
    """Judged items per language and strategy; drafts turned down per reason."""
    for judgment in judgments:
        instruction = judgment.instruction
        report.by_language[instruction.seed.language] += 1
        report.by_strategy[instruction.strategy or instruction.seed.strategy or "tap"] += 1
        for rejection in instruction.rejections:
            report.rejections[rejection.reason] += 1
        for response in judgment.responses:
            for rejection in response.rejections:
                report.rejections[f"response_{rejection.reason}"] += 1
        report.unusable += not judgment.usable


def _calls(judgment: pb.Judgment) -> list[pb.LLMCall]:
    calls = [s.call for s in judgment.scores if s.HasField("call")]
    for comparison in judgment.comparisons:
        calls.extend(comparison.calls)
    calls.extend(judgment.contrastive.calls)
    return calls


def _add_comparison(health: pb.JudgeHealth, comparison: pb.Comparison) -> None:
    """One comparison's verdict in ``health`` (its calls are counted apart)."""
    if comparison.failed:
        health.judge_failures += 1
        return
    health.comparisons += 1
    health.inconsistent += comparison.inconsistent
    raws = [comparison.a_first_a, comparison.a_first_b]
    if comparison.swapped:
        raws += [comparison.b_first_a, comparison.b_first_b]
    for raw in raws:
        health.histogram[min(int(raw) // 10 * 10, 90)] += 1  # 100 joins 90-99


def _rates(health: pb.JudgeHealth) -> None:
    # Every attempt is a call (invalid ones too): the rate is invalid replies over all calls.
    health.parse_failure_rate = health.invalid_replies / health.calls if health.calls else 0.0
    health.swap_disagreement_rate = (
        health.inconsistent / health.comparisons if health.comparisons else 0.0
    )


def add_comparisons(health: pb.JudgeHealth, comparisons: Iterable[pb.Comparison]) -> None:
    """Comparisons made outside any item's judging (TACOS comparative scoring) in ``health``:
    their calls, invalid replies, verdicts, swap disagreement and score histogram."""
    for comparison in comparisons:
        for call in comparison.calls:
            health.calls += call.usage.calls
            health.invalid_replies += call.invalid_replies
        _add_comparison(health, comparison)
    _rates(health)


def merge_health(health: pb.JudgeHealth, part: pb.JudgeHealth) -> None:
    """Add ``part``'s counts (calls, verdicts, histogram) into ``health``; rates recomputed.
    Golden-set figures are not counts of the job's judging and are left alone."""
    health.calls += part.calls
    health.invalid_replies += part.invalid_replies
    health.judge_failures += part.judge_failures
    health.comparisons += part.comparisons
    health.inconsistent += part.inconsistent
    for bucket, n in part.histogram.items():
        health.histogram[bucket] += n
    health.contrastive_kept += part.contrastive_kept
    health.contrastive_refined += part.contrastive_refined
    health.contrastive_exhausted += part.contrastive_exhausted
    _rates(health)


def judge_health(finals: Sequence[pb.Judgment], versions: Sequence[pb.Judgment]) -> pb.JudgeHealth:
    """Health numbers over a job's judgments (``versions``: every judged version, refined ones
    included; ``finals``: the judgment each item ended with)."""
    health = pb.JudgeHealth()
    for judgment in versions:
        for call in _calls(judgment):
            health.calls += call.usage.calls
            health.invalid_replies += call.invalid_replies
        if judgment.contrastive.decision == "refine":
            health.contrastive_refined += 1
    for judgment in finals:
        for score in judgment.scores:
            if score.failed:
                health.judge_failures += 1
            elif judgment.mode != "pairwise":
                health.histogram[round(score.score)] += 1
        for comparison in judgment.comparisons:
            _add_comparison(health, comparison)
        decision = judgment.contrastive.decision
        health.contrastive_kept += decision in ("keep_strong", "keep_target")
        health.contrastive_exhausted += decision == "exhausted"
    _rates(health)
    return health


def cohen_kappa(predicted: Sequence[str], labels: Sequence[str]) -> float:
    """Agreement beyond chance between two labelings of the same items (1: perfect, 0: chance)."""
    n = len(labels)
    if n == 0:
        return 0.0
    observed = sum(p == t for p, t in zip(predicted, labels, strict=True)) / n
    pred, true = Counter(predicted), Counter(labels)
    expected = sum(pred[k] * true[k] for k in set(pred) | set(true)) / (n * n)
    return 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)


def golden_agreement(
    health: pb.JudgeHealth, predicted: Sequence[str], labels: Sequence[str]
) -> None:
    """Record the judge's accuracy and Cohen's kappa on the job's golden pairs."""
    health.golden_pairs = len(labels)
    if labels:
        health.golden_accuracy = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(
            labels
        )
        health.golden_kappa = cohen_kappa(predicted, labels)


def paid_usage(calls: Iterable[pb.LLMCall]) -> pb.Usage:
    """What ``calls`` spent: their usage summed, leaving out those the request cache answered
    (they spent nothing)."""
    total = pb.Usage()
    for call in calls:
        if not call.cached:
            add_usage(total, call.usage)
    return total


def usage_of(
    instructions: Iterable[pb.Instruction],
    responses: Iterable[pb.Response],
    scores: Iterable[pb.Score],
    versions: Iterable[pb.Judgment],
) -> pb.Usage:
    """Every recorded call behind a job, counted once.

    ``instructions``: one per item (its latest version: a refined instruction carries the
    usage of the versions before it) and the rejected ones; rubric ``scores`` are stored on
    their own; comparisons and contrastive calls live on the judged versions.
    """
    total = pb.Usage()
    for instruction in instructions:
        add_usage(total, instruction.usage)
    for response in responses:
        add_usage(total, response.usage)
    for score in scores:
        add_usage(total, score.call.usage)
    for judgment in versions:
        for comparison in judgment.comparisons:
            for call in comparison.calls:
                add_usage(total, call.usage)
        for call in judgment.contrastive.calls:
            add_usage(total, call.usage)
    return total
