"""A job's life as named transitions: submit, plan, select, enter a step, record a step's
report, succeed, fail, cancel.

Every job, whatever its kind, is created by ``submit``: recorded with its tenant and spend
limit, and only then is its first work queued. Each transition is one compare-and-set on the
record, so it is safe to repeat and to race.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from taxoforge.bus.topology import Stage
from taxoforge.errors import ConflictError, TransientError
from taxoforge.jobs.model import TERMINAL_STATES, JobKind, job_kind, now_ms
from taxoforge.jobs.store import JobStore
from taxoforge.store import SELECTION_PHASES
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "cancel",
    "enter",
    "fail",
    "fail_job",
    "plan",
    "record_report",
    "select",
    "stop_spending",
    "submit",
    "succeed",
    "top_up",
]


async def submit(
    jobs: JobStore,
    job: pb.Job,
    queue: Callable[[], Awaitable[None]],
    *,
    tenant: str,
    limit: pb.SpendLimit,
    what: str,
) -> bool:
    """Record ``job`` as ``tenant``'s with its spend limit, then ``queue`` its first work; all
    or nothing.

    Returns False when the job's id (an Idempotency-Key's) already holds the same request.

    Raises:
        ConflictError: the id holds a different ``what`` (request).
        TransientError: the work could not be queued (the job is removed again).
    """
    job.tenant = tenant
    job.spend_limit.CopyFrom(limit)
    job.created_at_ms = job.updated_at_ms = now_ms()
    if not await jobs.create(job):
        existing = await jobs.get(job.id)
        if existing is None or not _same_request(existing, job):
            raise ConflictError(
                f"this Idempotency-Key was already used for a different {what}; use a new key"
            )
        return False
    try:
        await queue()
    except Exception as exc:
        await jobs.delete(job.id)  # nothing half-created
        raise TransientError(f"could not queue the job: {exc}") from exc
    return True


def _same_request(a: pb.Job, b: pb.Job) -> bool:
    return (
        a.kind == b.kind
        and a.recipe == b.recipe
        and a.source == b.source
        and a.expand == b.expand
        and a.induce == b.induce
    )


def fail_job(reason: str) -> Callable[[pb.Job], bool]:
    """A job mutation that marks a running job failed with ``reason``."""

    def _mutate(job: pb.Job) -> bool:
        if job.state in TERMINAL_STATES:
            return False
        job.state = pb.JOB_STATE_FAILED
        job.error = reason
        return True

    return _mutate


async def fail(
    jobs: JobStore,
    job_id: str,
    reason: str,
    *,
    induction: pb.InductionReport | None = None,
    datasets: Sequence[pb.DatasetInfo] | None = None,
    selection: pb.SelectionReport | None = None,
) -> pb.Job | None:
    """Fail a job that has not ended with ``reason`` (and what it wrote all the same: an
    induction's report, a dataset folder listing why nothing was kept, its selection report);
    None if there is no such job."""
    failing = fail_job(reason)

    def _fail(job: pb.Job) -> bool:
        if not failing(job):
            return False
        if induction is not None:
            job.induction.CopyFrom(induction)
        if datasets is not None:
            del job.datasets[:]
            job.datasets.extend(datasets)
        if selection is not None:
            job.selection.CopyFrom(selection)
        return True

    return await jobs.update(job_id, _fail)


async def stop_spending(jobs: JobStore, job_id: str, reason: str) -> pb.Job | None:
    """A job has reached its spend limit: a generation job stops generating (``stopped``; its
    remaining items end as failed, it delivers what it has), any other job fails. None when
    the job had already stopped or ended."""
    failing = fail_job(reason)

    def _stop(job: pb.Job) -> bool:
        if job.stopped or job.state in TERMINAL_STATES:
            return False
        if job_kind(job) is not JobKind.GENERATE:
            return failing(job)
        job.stopped = reason
        return True

    return await jobs.update(job_id, _stop)


async def enter(jobs: JobStore, job_id: str, after: Stage, step: Stage, planned: int = 1) -> bool:
    """Move a selecting job from step ``after`` to ``step`` (expecting ``planned`` results);
    False when it is no longer selecting at ``after`` (only the first move counts)."""
    moved = False

    def _enter(job: pb.Job) -> bool:
        nonlocal moved
        if job.state != pb.JOB_STATE_SELECTING or job.phase != after.value:
            return False
        job.phase, job.phase_planned = step.value, planned
        moved = True
        return True

    await jobs.update(job_id, _enter)
    return moved


async def cancel(jobs: JobStore, job_id: str, tenant: str) -> tuple[pb.Job | None, int | None]:
    """Cancel ``tenant``'s job unless it has ended: (the job, its state before), or (None,
    None) when ``tenant`` has no such job."""
    before: list[int] = []

    def _cancel(job: pb.Job) -> bool:
        if job.tenant != tenant:
            return False
        before.append(job.state)
        if job.state in TERMINAL_STATES:
            return False
        job.state = pb.JOB_STATE_CANCELLED
        job.error = "cancelled by request"
        return True

    job = await jobs.update(job_id, _cancel)
    if job is None or job.tenant != tenant:
        return None, None
    return job, before[-1] if before else None


async def plan(jobs: JobStore, job_id: str, planned: int) -> bool:
    """A pending job's plan is made: it runs, expecting ``planned`` items (False: it was no
    longer pending, so an earlier plan stands)."""
    moved = False

    def _planned(job: pb.Job) -> bool:
        nonlocal moved
        if job.state != pb.JOB_STATE_PENDING:
            return False
        job.planned = planned
        job.state = pb.JOB_STATE_RUNNING
        moved = True
        return True

    await jobs.update(job_id, _planned)
    return moved


async def top_up(jobs: JobStore, job_id: str, round_: int, seeds: int) -> bool:
    """A running generation job's review ``round_`` adds ``seeds`` replacement items (False:
    the round was already decided, or the job no longer runs)."""
    moved = False

    def _top_up(job: pb.Job) -> bool:
        nonlocal moved
        if job.state != pb.JOB_STATE_RUNNING or job.rounds != round_ - 1:
            return False
        job.rounds = round_
        job.planned += seeds
        moved = True
        return True

    await jobs.update(job_id, _top_up)
    return moved


async def select(jobs: JobStore, job_id: str, step: Stage) -> bool:
    """Every item of a running job has ended: it is selecting, from ``step`` on (False: it
    was no longer running)."""
    moved = False

    def _selecting(job: pb.Job) -> bool:
        nonlocal moved
        if job.state != pb.JOB_STATE_RUNNING:
            return False
        job.state = pb.JOB_STATE_SELECTING
        if step in SELECTION_PHASES:
            job.phase, job.phase_planned = step.value, 1
        moved = True
        return True

    await jobs.update(job_id, _selecting)
    return moved


async def record_report(
    jobs: JobStore, job_id: str, step: Stage, report: pb.SelectionReport
) -> pb.Job | None:
    """Store a selection step's ``report``, only while the job is still selecting at
    ``step`` (a step run late, after the job moved on or ended, changes nothing)."""

    def _report(job: pb.Job) -> bool:
        if job.state != pb.JOB_STATE_SELECTING or job.phase != step.value:
            return False
        job.selection.CopyFrom(report)
        return True

    return await jobs.update(job_id, _report)


async def succeed(
    jobs: JobStore,
    job_id: str,
    *,
    datasets: Sequence[pb.DatasetInfo] | None = None,
    selection: pb.SelectionReport | None = None,
    taxonomy_version: str = "",
    induction: pb.InductionReport | None = None,
    short: bool = False,
) -> pb.Job | None:
    """A job that has not ended succeeds, with what it made: its datasets and selection
    report, or the taxonomy version it wrote (and an induction's report); ``short`` when the
    datasets hold less than the plan (the report's composition says where and why)."""

    def _succeed(job: pb.Job) -> bool:
        if job.state in TERMINAL_STATES:
            return False
        job.state = pb.JOB_STATE_SUCCEEDED
        job.phase = ""
        job.short = short
        if datasets is not None:
            del job.datasets[:]
            job.datasets.extend(datasets)
        if selection is not None:
            job.selection.CopyFrom(selection)
        if taxonomy_version:
            job.result_taxonomy_version = taxonomy_version
        if induction is not None:
            job.induction.CopyFrom(induction)
        return True

    return await jobs.update(job_id, _succeed)
