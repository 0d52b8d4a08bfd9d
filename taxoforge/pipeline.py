"""What every stage handler does the same way: find its job, publish onward, record failures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from google.protobuf.message import Message

from taxoforge.bus import Bus, Stage, work_subject
from taxoforge.bus.worker import DeadLetterHook, Delivery
from taxoforge.errors import JobStopped, NotFoundError
from taxoforge.jobs.lifecycle import enter, fail, stop_spending
from taxoforge.jobs.model import TERMINAL_STATES, JobKind, job_kind
from taxoforge.jobs.store import JobStore
from taxoforge.llm.metering import SPEND_CHECK
from taxoforge.store import SELECTION_ITEM_STAGES, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "ITEM_HEADER",
    "JOB_HEADER",
    "active_job",
    "bind_job",
    "dead_letter_recorder",
    "enter_step",
    "over_limit",
    "publish_work",
]

log = structlog.get_logger(__name__)

JOB_HEADER = "TF-Job-Id"
ITEM_HEADER = "TF-Item-Id"


async def publish_work(
    bus: Bus,
    stage: Stage,
    message: Message,
    job_id: str,
    item_id: str = "",
    version: int = 0,
) -> None:
    """Queue work for a stage; the id makes a republish of the same work a no-op (a refined
    ``version`` of an item is new work)."""
    msg_id = f"{job_id}.{item_id}.{stage.value}" if item_id else f"{job_id}.{stage.value}"
    if version:
        msg_id += f".v{version}"
    headers = {JOB_HEADER: job_id}
    if item_id:
        headers[ITEM_HEADER] = item_id
    await bus.publish(work_subject(stage), message, msg_id, headers)


async def active_job(jobs: JobStore, job_id: str) -> pb.Job | None:
    """The job a message belongs to, or None when it has ended (cancelled work is dropped).

    Raises:
        NotFoundError: no such job; the message can never be processed.
    """
    job = await jobs.get_cached(job_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} does not exist")
    if job.state in TERMINAL_STATES:
        log.info("work_skipped", job_state=pb.JobState.Name(job.state))
        return None
    bind_job(jobs, job_id)
    if job.stopped:  # a generation job past its limit: items end failed, its steps still run
        return job
    if job.spend_limit.tokens > 0 or job.spend_limit.cost_usd > 0:
        check = _spend_check(jobs, job_id, job.spend_limit)
        try:
            await check()
        except JobStopped as stopped:
            if job_kind(job) is not JobKind.GENERATE:
                return None
            job.stopped = str(stopped)  # this copy; the stored job says so too
            return job
        # The model client checks again before every call it pays for, while this message is
        # handled (the variable is this handler's task's own).
        SPEND_CHECK.set(check)
    return job


def bind_job(jobs: JobStore, job_id: str) -> None:
    """The model calls the current task (and the tasks it starts) makes are the job's: the
    model client counts each in the job's usage, and prompts are fenced with the job's
    markers, so the same work asked again renders the same prompt (the cache answers it)."""
    if jobs.meter is not None:
        jobs.meter.bind(job_id)
    jobs.secrets.bind(job_id)


def _spend_check(
    jobs: JobStore, job_id: str, limit: pb.SpendLimit
) -> Callable[[], Awaitable[None]]:
    """A check that stops the job once it has spent ``limit``.

    What this process spent is exact; what the others spent is what they wrote (each paid
    call as it is sent, with its prompt's estimate; replies with the next write or within a
    second), read at most every 0.2 s. Calls already in flight finish, so a job overshoots by
    their replies.
    """

    async def _check() -> None:
        reason = over_limit(limit, await jobs.spent(job_id))
        if reason:
            await jobs.write_usage(job_id)  # the job's figures then show what stopped it
            # A generation job stops generating and delivers what it has (short); any other
            # job fails.
            if await stop_spending(jobs, job_id, reason) is not None:
                log.warning("job_over_spend_limit", job_id=job_id, reason=reason)
            raise JobStopped(reason)

    return _check


def over_limit(limit: pb.SpendLimit, spent: pb.Usage) -> str:
    """Why ``spent`` has reached ``limit`` (a job's reason to stop), or "" when it has not."""
    tokens = spent.prompt_tokens + spent.completion_tokens
    if limit.tokens > 0 and tokens >= limit.tokens:
        return (
            f"spend limit reached: {tokens:,} tokens spent (prompts of calls in flight "
            f"included), the limit is {limit.tokens:,}"
        )
    if limit.cost_usd > 0 and spent.cost_usd >= limit.cost_usd:
        return (
            f"spend limit reached: ${spent.cost_usd:.4f} spent, the limit is ${limit.cost_usd:.4f}"
        )
    return ""


def dead_letter_recorder(jobs: JobStore, items: ItemStore) -> DeadLetterHook:
    """A hook that records a dead-lettered message as what it means for its job.

    An item message ends its item as failed, with the reason; a whole-job message (plan,
    select) fails the job. Either way the job finishes and reports it: nothing is silently lost.
    """

    async def _record(delivery: Delivery, reason: str) -> None:
        job_id = delivery.headers.get(JOB_HEADER, "")
        item_id = delivery.headers.get(ITEM_HEADER, "")
        if not job_id:
            log.error("dead_letter_without_job", subject=delivery.subject)
            return
        if item_id:
            await items.record_failure(job_id, delivery.stage, item_id, reason, delivery.deliveries)
        else:
            await fail(jobs, job_id, f"{delivery.stage.value} failed: {reason}")

    return _record


async def enter_step(
    bus: Bus, jobs: JobStore, job_id: str, after: Stage, step: Stage, planned: int = 1
) -> bool:
    """Move a selecting job from step ``after`` to ``step`` (expecting ``planned`` results),
    queueing a whole-job step first. Safe to repeat: only the first move from ``after``
    counts, and the queued message's id makes a second publish a no-op; a crash between the
    two leaves the job at ``after``, whose handler runs again on redelivery.
    """
    job = await jobs.get(job_id)
    if job is None or job.state != pb.JOB_STATE_SELECTING or job.phase != after.value:
        return False
    if step not in SELECTION_ITEM_STAGES:
        await publish_work(bus, step, pb.JobRef(job_id=job_id), job_id)
    return await enter(jobs, job_id, after, step, planned)
