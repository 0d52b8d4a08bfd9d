"""Pairwise judging: two candidates compared on 1-100 in both orders (swap control), the
inconsistency policy, TACOS comparative scoring of samples, and pairwise mode's pair."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Sequence
from itertools import combinations

from services.judge.allowance import Allowance, AllowanceSpent, Tally
from services.judge.rubric import pick_pair
from services.judge.verdicts import (
    MAX_RATIONALE,
    PROMPTS,
    PairVerdict,
    Verdict,
    VerdictRules,
    ask_on_responses,
    ask_two,
    checked,
    verdict_of,
)
from taxoforge.languages import language_name
from taxoforge.llm import LLMClient, StructuredOutputError
from taxoforge.llm.metering import METER
from taxoforge.prompts import load_template
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "DEFAULT_DISAGREEMENT",
    "Pairwise",
    "all_pairs",
    "pairwise_scores",
    "rank_pair",
]

DEFAULT_DISAGREEMENT = 30.0


class Pairwise:
    """The pairwise model calls: a pair of candidates, or a sample and its reference."""

    def __init__(self, llm: LLMClient, rules: VerdictRules | None = None) -> None:
        self._llm = llm
        self._pairwise = load_template(PROMPTS / "pairwise.yaml")
        self._samples = load_template(PROMPTS / "samples.yaml")
        self._verdict = checked(PairVerdict, rules or VerdictRules())

    async def compare_samples(
        self,
        sample: pb.Sample,
        reference: pb.Sample,
        cfg: pb.ModelConfig,
        language: str,
        max_calls: int = 0,
    ) -> pb.Comparison:
        """TACOS comparative scoring: a sample (A) against its cluster's reference (B) as
        training data, 1-100, in both orders at once; the orders' means are the scores. A judge
        that never answers validly gives a failed comparison, never a score.

        ``max_calls``: requests both orders may send together, retries included (0: no
        limit); the one that would go past it is not sent and the comparison fails. Each
        order's call records every request it sent, so the comparison's calls are what the
        model served for it."""
        out = pb.Comparison(a_id=sample.id, b_id=reference.id, swapped=True)
        allowance = Allowance(max(0, max_calls))

        async def ask(first: pb.Sample, second: pb.Sample) -> Verdict:
            # This order's own task (gather runs it in one), so the meter is this order's.
            tally = Tally(allowance, METER.get())
            METER.set(tally)
            try:
                a, b, why, call = await ask_two(
                    self._llm,
                    self._samples,
                    self._verdict,
                    cfg,
                    (self._samples.name, first.id, second.id),
                    language=language_name(language or "en"),
                    query_1=first.query,
                    response_1=first.response,
                    query_2=second.query,
                    response_2=second.response,
                )
            except StructuredOutputError as exc:
                exc.call.usage.CopyFrom(tally.usage)
                raise
            except AllowanceSpent as exc:
                # Every reply this order got was invalid (a valid one would have ended it).
                spent = self._samples.stamp(pb.LLMCall(role="judge", invalid_replies=tally.replies))
                spent.usage.CopyFrom(tally.usage)
                raise StructuredOutputError(
                    f"no valid judge reply within the comparison's calls: {exc}", spent
                ) from exc
            call.usage.CopyFrom(tally.usage)  # transient retries were sent too
            return a, b, why, call

        ab, ba = await asyncio.gather(
            ask(sample, reference), ask(reference, sample), return_exceptions=True
        )
        for result in (ab, ba):
            if isinstance(result, BaseException) and not isinstance(result, StructuredOutputError):
                raise result
        errors = [r for r in (ab, ba) if isinstance(r, StructuredOutputError)]
        if errors:
            # Both orders' calls were paid for, the failed ones too.
            for result in (ab, ba):
                if isinstance(result, tuple):
                    out.calls.append(result[3])
                elif isinstance(result, StructuredOutputError):
                    out.calls.append(result.call)
            out.failed, out.verdict = True, "tie"
            out.error = "; ".join(str(e) for e in errors)[:MAX_RATIONALE]
            return out
        assert isinstance(ab, tuple) and isinstance(ba, tuple)
        _record_both_orders(out, ab, ba, DEFAULT_DISAGREEMENT)
        out.verdict = verdict_of(out.a - out.b)
        return out

    async def compare(
        self,
        instruction: pb.Instruction,
        a: pb.Response,
        b: pb.Response,
        cfg: pb.ModelConfig,
        config: pb.JudgeConfig,
        rng: random.Random,
    ) -> pb.Comparison:
        """A and B on 1-100, A first then B first (unless ``no_swap``); the orders' means are the
        scores. Orders that disagree beyond ``disagreement`` make the pair inconsistent, and
        the policy decides its verdict."""
        out = pb.Comparison(a_id=a.id, b_id=b.id, swapped=not config.no_swap)
        try:
            if config.no_swap:
                a1, b1, why, call = await self._two(instruction, a, b, cfg)
                out.a_first_a, out.a_first_b, out.rationale_a_first = a1, b1, why
                out.calls.append(call)
                out.a, out.b = a1, b1
                out.verdict = verdict_of(a1 - b1)
                return out
            # Both orders at once: a pair costs one model latency, not two.
            order_ab, order_ba = await asyncio.gather(
                self._two(instruction, a, b, cfg),
                self._two(instruction, b, a, cfg),
                return_exceptions=True,
            )
            for result in (order_ab, order_ba):
                if isinstance(result, StructuredOutputError):
                    for other in (order_ab, order_ba):  # the order that did answer was paid for too
                        if isinstance(other, tuple):
                            out.calls.append(other[3])
                    raise result
                if isinstance(result, BaseException):
                    raise result
            assert isinstance(order_ab, tuple) and isinstance(order_ba, tuple)
            limit = config.disagreement or DEFAULT_DISAGREEMENT
            _record_both_orders(out, order_ab, order_ba, limit)
            if not out.inconsistent:
                out.verdict = verdict_of(out.a - out.b)
                return out
            policy = config.inconsistent or "tie"
            if policy == "third":
                if rng.random() < 0.5:
                    a3, b3, _, call = await self._two(instruction, a, b, cfg, again=True)
                else:
                    b3, a3, _, call = await self._two(instruction, b, a, cfg, again=True)
                out.calls.append(call)
                out.verdict = verdict_of(a3 - b3)
            else:
                out.verdict = "tie"  # "tie", and "drop" (the item then leaves the datasets)
            return out
        except StructuredOutputError as exc:
            # A judge failure, never a score: the comparison counts as a tie and is reported.
            failed = pb.Comparison(a_id=a.id, b_id=b.id, swapped=out.swapped, failed=True)
            failed.verdict, failed.error = "tie", str(exc)[:MAX_RATIONALE]
            failed.calls.extend([*out.calls, exc.call])
            return failed

    def _two(
        self,
        instruction: pb.Instruction,
        first: pb.Response,
        second: pb.Response,
        cfg: pb.ModelConfig,
        again: bool = False,
    ) -> Awaitable[Verdict]:
        return ask_on_responses(
            self._llm, self._pairwise, self._verdict, cfg, instruction, first, second, again
        )


def _record_both_orders(out: pb.Comparison, ab: Verdict, ba: Verdict, limit: float) -> None:
    """Both orders' scores, rationales and calls; their means are the scores. The orders
    disagree when their verdicts are opposite or their differences more than ``limit`` apart."""
    (a1, b1, why1, call1), (b2, a2, why2, call2) = ab, ba
    out.a_first_a, out.a_first_b, out.rationale_a_first = a1, b1, why1
    out.b_first_a, out.b_first_b, out.rationale_b_first = a2, b2, why2
    out.calls.extend([call1, call2])
    out.a, out.b = (a1 + a2) / 2, (b1 + b2) / 2
    first, second = a1 - b1, a2 - b2
    opposite = verdict_of(first) != verdict_of(second) and "tie" not in (
        verdict_of(first),
        verdict_of(second),
    )
    out.inconsistent = opposite or abs(first - second) > limit


def pairwise_scores(
    responses: Sequence[pb.Response], comparisons: Sequence[pb.Comparison]
) -> list[pb.Score]:
    """Each candidate's mean score over its comparisons (1-100)."""
    totals: dict[str, list[float]] = {r.id: [] for r in responses}
    for c in comparisons:
        if c.failed:
            continue
        totals[c.a_id].append(c.a)
        totals[c.b_id].append(c.b)
    return [
        pb.Score(response_id=rid, score=sum(v) / len(v), failed=not v)
        if v
        else pb.Score(response_id=rid, failed=True)
        for rid, v in totals.items()
    ]


def rank_pair(
    scores: Sequence[pb.Score], comparisons: Sequence[pb.Comparison], min_margin: float
) -> pb.PreferencePair | None:
    """Pairwise mode's pair: best against worst by mean score, if the comparison between the
    two (after its inconsistency policy) prefers the best and the margin holds."""
    pair = pick_pair(scores, min_margin)
    if pair is None:
        return None
    for c in comparisons:
        if {c.a_id, c.b_id} == {pair.chosen_id, pair.rejected_id}:
            winner = c.a_id if c.verdict == "a" else c.b_id if c.verdict == "b" else ""
            return pair if winner == pair.chosen_id else None
    return pair


def all_pairs(responses: Sequence[pb.Response]) -> list[tuple[pb.Response, pb.Response]]:
    """Every unordered pair of candidates, in a stable order."""
    return list(combinations(responses, 2))
