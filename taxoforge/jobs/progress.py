"""A job's progress: exact per-stage counts of its finished and failed items, and its usage.

Every count is read at once (one round trip, not one after another), failures of every stage
in one read, and the results of a selection step the job has not reached yet are not counted:
steps run in order, so there are none.
"""

from __future__ import annotations

import asyncio

from taxoforge.bus.topology import Stage
from taxoforge.jobs.model import JobKind, job_kind
from taxoforge.jobs.store import JobStore
from taxoforge.store import SELECTION_PHASES, SELECTION_RESULT, ItemKind, ItemStore
from taxoforge.usage import at_least
from taxoforge.v1 import common_pb2 as pb

__all__ = ["job_progress"]

# The result kind each generation stage writes per item, so its finished items can be counted.
_STAGE_RESULT = {
    Stage.INSTRUCT: ItemKind.INSTRUCTION,
    Stage.RESPOND: ItemKind.CANDIDATES,
    Stage.JUDGE: ItemKind.JUDGMENT,
}

# The work stage of each taxonomy job kind, whose items it counts.
_TAXONOMY_STAGE = {JobKind.EXPAND: Stage.EXPAND, JobKind.INDUCE: Stage.INDUCE}


def _reached(job: pb.Job) -> list[Stage]:
    """The selection steps with results per item that the job has reached (or passed)."""
    if job.state == pb.JOB_STATE_SUCCEEDED:
        return list(SELECTION_RESULT)
    current = SELECTION_PHASES.index(Stage(job.phase)) if job.phase else -1
    return [s for s in SELECTION_RESULT if SELECTION_PHASES.index(s) <= current]


def _selection_progress(
    job: pb.Job, done: dict[Stage, int], failed: dict[str, int], out: pb.JobProgress
) -> None:
    """The selection steps: one result per item for tag and compare, once for the others.

    A step before the job's current one is done; the current one counts its results.
    """
    done_all = job.state == pb.JOB_STATE_SUCCEEDED
    current = SELECTION_PHASES.index(Stage(job.phase)) if job.phase else -1
    for i, stage in enumerate(SELECTION_PHASES):
        passed = done_all or i < current
        if stage in SELECTION_RESULT:
            results, failures = done.get(stage, 0), failed.get(stage.value, 0)
            planned = job.phase_planned if i == current and not done_all else results + failures
            out.stages.add(stage=stage.value, done=results, failed=failures, planned=planned)
        else:
            out.stages.add(stage=stage.value, done=1 if passed else 0, planned=1)


async def job_progress(jobs: JobStore, items: ItemStore, job_id: str) -> pb.JobProgress | None:
    """The job with exact per-stage counts of finished and failed items."""
    job = await jobs.get(job_id)
    if job is None:
        return None
    out = pb.JobProgress(job=job)
    kind = job_kind(job)
    counted: list[Stage] = []
    if kind is JobKind.GENERATE:
        counted += _STAGE_RESULT
    if kind not in _TAXONOMY_STAGE:
        counted += _reached(job)
    kinds = [_STAGE_RESULT.get(s) or SELECTION_RESULT[s] for s in counted]
    finished, failed, usage, counts = await asyncio.gather(
        items.count(job_id, ItemKind.OUTCOME),
        items.count_failed_by_stage(job_id),
        jobs.usage(job_id),
        asyncio.gather(*(items.count(job_id, k) for k in kinds)),
    )
    done = dict(zip(counted, counts, strict=True))
    out.finished = finished
    out.usage.CopyFrom(usage)
    if kind in _TAXONOMY_STAGE:
        stage = _TAXONOMY_STAGE[kind]
        stage_failed = failed.get(stage.value, 0)
        out.stages.add(stage=stage.value, done=out.finished - stage_failed, failed=stage_failed)
        applied = 1 if job.state == pb.JOB_STATE_SUCCEEDED else 0
        out.stages.add(stage=Stage.APPLY.value, done=applied, failed=0)
        return out
    if kind is JobKind.GENERATE:
        plan_failed = failed.get(Stage.PLAN.value, 0)
        out.stages.add(stage=Stage.PLAN.value, done=1 if job.planned else 0, failed=plan_failed)
        for stage in _STAGE_RESULT:
            out.stages.add(stage=stage.value, done=done[stage], failed=failed.get(stage.value, 0))
    _selection_progress(job, done, failed, out)
    # Every call made for the job, repeats included (each counted before it was sent).
    if job.HasField("selection") and job.state == pb.JOB_STATE_SUCCEEDED:
        # The kept results' own records: tokens of a reply whose process died before it
        # wrote them (within a second) are there, though not in the processes' totals.
        at_least(out.usage, job.selection.usage)
    return out
