"""Spend limits: when a job has reached its limit, and what a process has not written yet."""

from __future__ import annotations

import pytest

from taxoforge.jobs.lifecycle import stop_spending
from taxoforge.pipeline import over_limit
from taxoforge.usage import UsageMeter
from taxoforge.v1 import common_pb2 as pb


class FakeJobStore:
    """Stands in for JobStore: keeps what the meter writes."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str], pb.Usage] = {}
        self.meter: UsageMeter | None = None

    def attach_meter(self, meter: UsageMeter) -> None:
        self.meter = meter

    async def record_usage(self, job_id: str, instance: str, usage: pb.Usage) -> None:
        self.written[(job_id, instance)] = usage


def _usage(prompt: int, completion: int, cost: float = 0.0) -> pb.Usage:
    return pb.Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, calls=1)


@pytest.mark.parametrize(
    ("limit", "spent", "stops"),
    [
        (pb.SpendLimit(tokens=1000), _usage(600, 399), False),
        (pb.SpendLimit(tokens=1000), _usage(600, 400), True),
        (pb.SpendLimit(cost_usd=0.5), _usage(10**6, 10**6, 0.49), False),
        (pb.SpendLimit(cost_usd=0.5), _usage(1, 1, 0.5), True),
        (pb.SpendLimit(tokens=1000, cost_usd=1.0), _usage(1, 1, 2.0), True),
        (pb.SpendLimit(), _usage(10**9, 10**9, 10**6), False),  # no limit
    ],
)
def test_a_job_stops_at_its_token_or_cost_limit(
    limit: pb.SpendLimit, spent: pb.Usage, stops: bool
) -> None:
    reason = over_limit(limit, spent)
    assert bool(reason) is stops
    if stops:
        assert reason.startswith("spend limit reached")


async def test_the_meter_knows_what_it_has_not_written() -> None:
    jobs = FakeJobStore()
    meter = UsageMeter(jobs, "proc-1")  # type: ignore[arg-type]
    assert jobs.meter is meter
    meter.add("j", _usage(100, 50, 0.25))
    assert meter.unflushed("j").prompt_tokens == 100
    await meter.flush()
    assert jobs.written[("j", "proc-1")].completion_tokens == 50
    assert meter.unflushed("j") == pb.Usage()
    meter.add("j", _usage(10, 5))
    unflushed = meter.unflushed("j")
    assert (unflushed.prompt_tokens, unflushed.completion_tokens, unflushed.calls) == (10, 5, 1)
    assert meter.unflushed("other") == pb.Usage()


class _OneJob:
    """Stands in for JobStore.update on a single stored job."""

    def __init__(self, job: pb.Job) -> None:
        self.job = job

    async def update(self, job_id: str, mutate: object) -> pb.Job | None:
        changed = pb.Job()
        changed.CopyFrom(self.job)
        if not mutate(changed):  # type: ignore[operator]
            return None
        self.job = changed
        return changed


async def test_a_generation_job_stops_generating_at_its_limit_and_others_fail() -> None:
    generating = _OneJob(pb.Job(id="j-1", state=pb.JOB_STATE_RUNNING))
    stopped = await stop_spending(generating, "j-1", "spend limit reached: 10 tokens")  # type: ignore[arg-type]
    assert stopped is not None and stopped.state == pb.JOB_STATE_RUNNING
    assert stopped.stopped == "spend limit reached: 10 tokens"
    # Only once: a second check does not stop it again.
    assert await stop_spending(generating, "j-1", "again") is None  # type: ignore[arg-type]

    selecting = _OneJob(pb.Job(id="j-2", kind="select", state=pb.JOB_STATE_SELECTING))
    failed = await stop_spending(selecting, "j-2", "spend limit reached: 10 tokens")  # type: ignore[arg-type]
    assert failed is not None and failed.state == pb.JOB_STATE_FAILED and not failed.stopped
