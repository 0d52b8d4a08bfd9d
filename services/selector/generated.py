"""A generation job's examples and its generation report (what happened to every item, the
judge's health, and the exact usage behind it)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import structlog

from services.selector.dropped import Dropped
from services.selector.examples import Example
from services.selector.records import contrastive_history, example_of
from services.selector.report import count_items, golden_agreement, judge_health, usage_of
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.errors import TransientError
from taxoforge.grpc_server import client_channel
from taxoforge.llm.metering import add_usage
from taxoforge.store import ItemKind
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb
from taxoforge.v1 import judge_pb2_grpc

__all__ = ["exact_usage", "generated_examples", "read_generated"]

log = structlog.get_logger(__name__)

_TOP_REASONS = 5
# Characters of a failure's reason kept in its dropped.jsonl line.
_DETAIL_CHARS = 1000
_GOLDEN_TIMEOUT_S = 600.0


def _unusable(judgment: pb.Judgment, why: str) -> Dropped:
    """A judged item left out: why, with its contrastive rounds when it had any."""
    extra: dict[str, Any] = {}
    history = contrastive_history(judgment)
    if history:
        extra["contrastive"] = history
        extra["rubric_rounds"] = len(judgment.instruction.rounds)
    return Dropped(judgment.item_id, Stage.JUDGE.value, "unusable", why, extra)


def read_generated(path: Path) -> Iterator[Example | Dropped]:
    """What ``generated_examples`` wrote: examples, and the items left out with why."""
    with path.open("rb") as fh:
        for line in fh:
            value = json.loads(line)
            if "dropped" in value:
                yield Dropped.from_json(value)
            else:
                yield value


async def generated_examples(
    ctx: ServiceContext, job: pb.Job, report: pb.SelectionReport, dest: Path, judge_addr: str
) -> Path:
    """Write the job's examples to ``dest`` and fill the generation part of ``report``.

    Raises:
        TransientError: not every planned item has ended yet.
    """
    items = ctx.items
    outcomes = [o async for o in items.scan(job.id, ItemKind.OUTCOME, pb.ItemOutcome)]
    if len(outcomes) < job.planned:
        raise TransientError(f"{len(outcomes)} of {job.planned} items have ended; not yet")
    judged = {o.item_id for o in outcomes if o.judged}
    judgments: list[pb.Judgment] = []
    with dest.open("w", encoding="utf-8") as fh:

        def _drop(dropped: Dropped) -> None:
            fh.write(json.dumps(dropped.to_json(), ensure_ascii=False) + "\n")

        async for judgment in items.scan(job.id, ItemKind.JUDGMENT, pb.Judgment):
            if judgment.item_id not in judged:
                continue
            judgments.append(judgment)
            if not judgment.usable:
                why = judgment.unusable_reason or "the judge found it unusable"
                _drop(_unusable(judgment, why))
                continue
            example = example_of(judgment)
            if example is None:
                _drop(_unusable(judgment, "no response with a valid score"))
                continue
            fh.write(json.dumps(example, ensure_ascii=False) + "\n")
        # The judgment is stored before the item ends, so this is never expected; if it
        # happens the item is still accounted for.
        for item_id in sorted(judged - {j.item_id for j in judgments}):
            log.error("judgment_missing", item_id=item_id)
            detail = "judged, but no judgment is stored"
            _drop(Dropped(item_id, Stage.JUDGE.value, "failed", detail))
        failures = {
            (f.stage, f.item_id): f
            async for f in items.scan(job.id, ItemKind.FAILURE, pb.ItemFailure)
            if f.item_id not in judged
        }
        for outcome in outcomes:
            if not outcome.judged:
                stage = outcome.failed_stage or "unknown"
                failure = failures.get((stage, outcome.item_id))
                detail = failure.reason[:_DETAIL_CHARS] if failure else ""
                extra = {"deliveries": failure.deliveries} if failure else {}
                _drop(Dropped(outcome.item_id, stage, "failed", detail, extra))

    report.judged = len(judgments)
    report.failed = len(outcomes) - len(judged)
    for stage, n in Counter(o.failed_stage for o in outcomes if not o.judged).items():
        report.failures_by_stage[stage] = n
    count_items(report, judgments)
    rejected = [r async for r in items.scan(job.id, ItemKind.REJECTED, pb.Instruction)]
    for instruction in rejected:
        for rejection in instruction.rejections:
            report.rejections[rejection.reason] += 1
    versions = [v async for v in items.scan(job.id, ItemKind.JUDGED, pb.Judgment)]
    report.judge.CopyFrom(judge_health(judgments, versions))
    if job.recipe.judging.golden:
        await _golden(job, report.judge, judge_addr)
    reasons = Counter((f.stage, f.reason[:300]) for f in failures.values())
    for (stage, reason), n in reasons.most_common(_TOP_REASONS):
        report.failure_reasons.add(stage=stage, reason=reason, items=n)
    report.usage.CopyFrom(await _generation_usage(ctx, job.id, rejected, versions))
    return dest


async def _generation_usage(
    ctx: ServiceContext, job_id: str, rejected: list[pb.Instruction], versions: list[pb.Judgment]
) -> pb.Usage:
    """Every recorded call behind the job's items, counted once."""
    items = ctx.items
    latest: dict[str, pb.Instruction] = {}
    async for instruction in items.scan(job_id, ItemKind.INSTRUCTION, pb.Instruction):
        latest[instruction.item_id] = instruction
    async for refined in items.scan(job_id, ItemKind.REFINED, pb.Instruction):
        known = latest.get(refined.item_id)
        if known is None or refined.version > known.version:
            latest[refined.item_id] = refined
    responses = [r async for r in items.scan(job_id, ItemKind.RESPONSE, pb.Response)]
    scores = [s async for s in items.scan(job_id, ItemKind.SCORE, pb.Score)]
    return usage_of([*latest.values(), *rejected], responses, scores, versions)


async def exact_usage(ctx: ServiceContext, job_id: str, base: pb.Usage) -> pb.Usage:
    """``base`` (generation) plus every recorded selection call: tags and comparisons."""
    total = pb.Usage()
    total.CopyFrom(base)
    async for tags in ctx.items.scan(job_id, ItemKind.TAGS, pb.Tags):
        if not tags.call.cached:
            add_usage(total, tags.call.usage)
    async for comparison in ctx.items.scan(job_id, ItemKind.COMPARISON, pb.Comparison):
        for call in comparison.calls:
            if not call.cached:
                add_usage(total, call.usage)
    return total


async def _golden(job: pb.Job, health: pb.JudgeHealth, judge_addr: str) -> None:
    """The judge on the job's labelled pairs: accuracy and Cohen's kappa."""
    config = pb.JudgeConfig()
    config.CopyFrom(job.recipe.judging)
    config.mode, config.inconsistent = "pairwise", "tie"
    del config.golden[:]
    requests = []
    for i, pair in enumerate(job.recipe.judging.golden):
        instruction = pb.Instruction(text=pair.instruction, item_id=f"golden{i}")
        instruction.seed.language = job.recipe.languages[0].code if job.recipe.languages else "en"
        candidates = pb.Candidates(
            instruction=instruction,
            responses=[pb.Response(id="a", text=pair.a), pb.Response(id="b", text=pair.b)],
        )
        requests.append(
            jpb.JudgeCandidatesRequest(
                candidates=candidates, judge=job.recipe.models.judge, config=config
            )
        )
    try:
        async with client_channel(judge_addr) as channel:
            stub = judge_pb2_grpc.JudgeServiceStub(channel)
            resp = await stub.JudgeBatch(
                jpb.JudgeBatchRequest(requests=requests, job_id=job.id), timeout=_GOLDEN_TIMEOUT_S
            )
    except grpc.aio.AioRpcError as exc:
        log.warning("golden_set_not_judged", error=exc.details())
        return
    predicted = [j.comparisons[0].verdict if j.comparisons else "tie" for j in resp.judgments]
    golden_agreement(health, predicted, [p.preferred for p in job.recipe.judging.golden])
