"""A generation job's examples and its generation report (what happened to every item, the
judge's health, and the exact usage behind it)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import structlog

from services.selector.dropped import Dropped
from services.selector.examples import Example
from services.selector.golden import judge_golden
from services.selector.records import contrastive_history, example_of
from services.selector.report import count_items, judge_health, paid_usage, usage_of
from services.selector.workfiles import stored_composition
from taxoforge import jsonl
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.errors import TransientError
from taxoforge.llm.metering import add_usage
from taxoforge.store import ItemKind
from taxoforge.v1 import common_pb2 as pb

__all__ = ["generated_examples", "read_generated", "tagging_usage"]

M = TypeVar("M")

log = structlog.get_logger(__name__)

_TOP_REASONS = 5
# Characters of a failure's reason kept in its dropped.jsonl line.
_DETAIL_CHARS = 1000


def _unusable(judgment: pb.Judgment, why: str) -> Dropped:
    """A judged item left out: why, with its contrastive rounds when it had any."""
    extra: dict[str, Any] = {}
    history = contrastive_history(judgment)
    if history:
        extra["contrastive"] = history
        extra["rubric_rounds"] = len(judgment.instruction.rounds)
    return Dropped(judgment.item_id, Stage.JUDGE.value, "unusable", why, extra)


def _discarded(
    item_id: str, stage: Stage, made: pb.Instruction | pb.Candidates
) -> Iterator[Dropped]:
    """A line per draft or candidate the quality gates turned down (``candidate`` names it;
    the item's own line, kept or dropped, is elsewhere)."""
    rejections = made.rejections if isinstance(made, pb.Instruction) else made.rejected
    version = made.version if isinstance(made, pb.Instruction) else made.instruction.version
    for n, rejection in enumerate(rejections):
        name = rejection.candidate or f"{item_id}.draft{n}"
        if version:
            name += f".v{version}"
        extra: dict[str, Any] = {"candidate": name, "gate": rejection.reason}
        if rejection.attempt:
            extra["attempt"] = rejection.attempt
        text = rejection.text or rejection.detail
        yield Dropped(item_id, stage.value, "rejected_candidate", text[:300], extra)


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
    # Read while the examples are written: a scan waits on the server between its records as
    # long as it works on them, and these need nothing from the pass that writes.
    versions_read = asyncio.create_task(_listed(items.scan(job.id, ItemKind.JUDGED, pb.Judgment)))
    usage_read = asyncio.create_task(_item_usage(ctx, job.id))
    try:
        written = await _write_examples(ctx, job, outcomes, dest)
        versions = await versions_read
        latest, usage = await usage_read
    finally:
        versions_read.cancel()
        usage_read.cancel()
    judgments, failures, rejected, unended = written
    # Each version an item was judged in: stored apart for a job with contrastive filtering
    # (every version, the last included); otherwise the item's one judgment is its only one.
    apart = {v.item_id for v in versions}
    versions += [j for j in (*judgments, *unended) if j.item_id not in apart]
    # The plan's cells as generation delivered them (the select step counts the kept).
    composition = await stored_composition(ctx.bus, job.id)
    if composition is not None:
        report.composition.CopyFrom(composition)
    judged = sum(o.judged for o in outcomes)
    report.judged = len(judgments)
    report.failed = len(outcomes) - judged
    for stage, n in Counter(o.failed_stage for o in outcomes if not o.judged).items():
        report.failures_by_stage[stage] = n
    count_items(report, judgments)
    for instruction in rejected:
        for rejection in instruction.rejections:
            report.rejections[rejection.reason] += 1
    report.judge.CopyFrom(judge_health(judgments, versions))
    reasons = Counter((f.stage, f.reason[:300]) for f in failures.values())
    for (stage, reason), n in reasons.most_common(_TOP_REASONS):
        report.failure_reasons.add(stage=stage, reason=reason, items=n)
    # Every recorded call behind the job's items, counted once.
    total = usage_of([*latest.values(), *rejected], [], [], versions)
    add_usage(total, usage)
    report.usage.CopyFrom(total)
    # After the usage: the golden set's calls are added to it and to the judge's health.
    await judge_golden(job, report, judge_addr)
    return dest


_Written = tuple[
    list[pb.Judgment],
    dict[tuple[str, str], pb.ItemFailure],
    list[pb.Instruction],
    list[pb.Judgment],
]


async def _write_examples(
    ctx: ServiceContext, job: pb.Job, outcomes: list[pb.ItemOutcome], dest: Path
) -> _Written:
    """Every judged item's example, and a line for each item or candidate left out, to
    ``dest``; the judgments of judged items, the failures of unjudged items, the rejected
    instructions, and the judgments of items that did not end judged."""
    items = ctx.items
    judged = {o.item_id for o in outcomes if o.judged}
    judgments: list[pb.Judgment] = []
    unended: list[pb.Judgment] = []
    with dest.open("wb") as fh:

        def _drop(dropped: Dropped) -> None:
            fh.write(jsonl.line(dropped.to_json()))

        async for judgment in items.scan(job.id, ItemKind.JUDGMENT, pb.Judgment):
            if judgment.item_id not in judged:
                unended.append(judgment)
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
            fh.write(jsonl.line(example))
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
        # Every candidate a gate discarded (instruction drafts, response candidates), each
        # with its gate, whether its item was kept or not.
        for judgment in judgments:
            for drop in _discarded(judgment.item_id, Stage.INSTRUCT, judgment.instruction):
                _drop(drop)
        rejected = [r async for r in items.scan(job.id, ItemKind.REJECTED, pb.Instruction)]
        for turned_down in rejected:
            for drop in _discarded(turned_down.item_id, Stage.INSTRUCT, turned_down):
                _drop(drop)
        async for candidates in items.scan(job.id, ItemKind.CANDIDATES, pb.Candidates):
            item_id = candidates.instruction.item_id
            for drop in _discarded(item_id, Stage.RESPOND, candidates):
                _drop(drop)
    return judgments, failures, rejected, unended


async def _listed(records: AsyncIterator[M]) -> list[M]:
    return [record async for record in records]


async def _item_usage(
    ctx: ServiceContext, job_id: str
) -> tuple[dict[str, pb.Instruction], pb.Usage]:
    """Each item's latest instruction (a refined one carries the usage of the versions
    before it), and the usage of every response and rubric score, summed as they are read
    (two an item or more: not held)."""
    items = ctx.items
    latest: dict[str, pb.Instruction] = {}
    async for instruction in items.scan(job_id, ItemKind.INSTRUCTION, pb.Instruction):
        latest[instruction.item_id] = instruction
    async for refined in items.scan(job_id, ItemKind.REFINED, pb.Instruction):
        known = latest.get(refined.item_id)
        if known is None or refined.version > known.version:
            latest[refined.item_id] = refined
    total = pb.Usage()
    async for response in items.scan(job_id, ItemKind.RESPONSE, pb.Response):
        add_usage(total, response.usage)
    async for score in items.scan(job_id, ItemKind.SCORE, pb.Score):
        add_usage(total, score.call.usage)
    return latest, total


async def tagging_usage(ctx: ServiceContext, job_id: str) -> pb.Usage:
    """What the job's tag calls spent (see ``paid_usage``). With the comparisons' this is every
    recorded selection call's usage, added to generation's for the report's exact figures."""
    total = pb.Usage()
    async for page in ctx.items.scan(job_id, ItemKind.TAGS, pb.TaggedPage):
        add_usage(total, paid_usage(tags.call for tags in page.rows))
    return total
