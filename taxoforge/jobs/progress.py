"""A job's progress: exact per-stage counts of its finished and failed items, and its usage."""

from __future__ import annotations

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


async def _selection_progress(items: ItemStore, job: pb.Job, out: pb.JobProgress) -> None:
    """The selection steps: one result per item for tag and compare, once for the others.

    A step before the job's current one is done; the current one counts its results.
    """
    done_all = job.state == pb.JOB_STATE_SUCCEEDED
    current = SELECTION_PHASES.index(Stage(job.phase)) if job.phase else -1
    for i, stage in enumerate(SELECTION_PHASES):
        passed = done_all or i < current
        if stage in SELECTION_RESULT:
            done = await items.count(job.id, SELECTION_RESULT[stage])
            failed = await items.count_failed(job.id, stage)
            planned = job.phase_planned if i == current and not done_all else done + failed
            out.stages.add(stage=stage.value, done=done, failed=failed, planned=planned)
        else:
            out.stages.add(stage=stage.value, done=1 if passed else 0, planned=1)


async def job_progress(jobs: JobStore, items: ItemStore, job_id: str) -> pb.JobProgress | None:
    """The job with exact per-stage counts of finished and failed items."""
    job = await jobs.get(job_id)
    if job is None:
        return None
    out = pb.JobProgress(job=job)
    out.finished = await items.count(job_id, ItemKind.OUTCOME)
    kind = job_kind(job)
    if kind in _TAXONOMY_STAGE:
        stage = _TAXONOMY_STAGE[kind]
        failed = await items.count_failed(job_id, stage)
        out.stages.add(stage=stage.value, done=out.finished - failed, failed=failed)
        applied = 1 if job.state == pb.JOB_STATE_SUCCEEDED else 0
        out.stages.add(stage=Stage.APPLY.value, done=applied, failed=0)
        out.usage.CopyFrom(await jobs.usage(job_id))
        return out
    if kind is JobKind.GENERATE:
        plan_failed = await items.count_failed(job_id, Stage.PLAN)
        out.stages.add(stage=Stage.PLAN.value, done=1 if job.planned else 0, failed=plan_failed)
        for stage, result in _STAGE_RESULT.items():
            done = await items.count(job_id, result)
            failed = await items.count_failed(job_id, stage)
            out.stages.add(stage=stage.value, done=done, failed=failed)
    await _selection_progress(items, job, out)
    # Every call made for the job, repeats included (each counted before it was sent).
    out.usage.CopyFrom(await jobs.usage(job_id))
    if job.HasField("selection") and job.state == pb.JOB_STATE_SUCCEEDED:
        # The kept results' own records: tokens of a reply whose process died before it
        # wrote them (within a second) are there, though not in the processes' totals.
        at_least(out.usage, job.selection.usage)
    return out
