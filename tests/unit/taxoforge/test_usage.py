"""The usage meter: a paid call is written before it is made, writes are shared by the calls
that wait together, totals never go back, and cached replies are counted apart."""

from __future__ import annotations

import asyncio

import pytest

from taxoforge.llm.metering import METER, prompt_estimate
from taxoforge.usage import UsageMeter, UsageNotRecorded, at_least
from taxoforge.v1 import common_pb2 as pb


class SlowJobStore:
    """Stands in for JobStore: each write takes ``delay_s``, and it remembers every write."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.delay_s = delay_s
        self.writes: list[pb.Usage] = []
        self.failing = False
        self.busy = 0
        self.overlapped = False

    def attach_meter(self, meter: UsageMeter) -> None:
        pass

    async def record_usage(self, job_id: str, instance: str, usage: pb.Usage) -> None:
        self.busy += 1
        self.overlapped |= self.busy > 1
        try:
            await asyncio.sleep(self.delay_s)
            if self.failing:
                raise ConnectionError("nats is away")
            self.writes.append(usage)
        finally:
            self.busy -= 1

    @property
    def stored(self) -> pb.Usage:
        return self.writes[-1] if self.writes else pb.Usage()


async def test_a_call_is_written_before_it_may_be_sent() -> None:
    jobs = SlowJobStore()
    meter = UsageMeter(jobs, "p1")  # type: ignore[arg-type]

    await meter.call("j")

    # were the process killed now, with the request on its way, the job still counts it
    assert jobs.stored.calls == 1


async def test_calls_waiting_together_share_one_write() -> None:
    jobs = SlowJobStore(delay_s=0.02)
    meter = UsageMeter(jobs, "p1")  # type: ignore[arg-type]

    await asyncio.gather(*(meter.call("j") for _ in range(200)))

    assert jobs.stored.calls == 200
    # the first call's write, then one for everyone who arrived during it
    assert len(jobs.writes) <= 3
    assert not jobs.overlapped
    assert [w.calls for w in jobs.writes] == sorted(w.calls for w in jobs.writes)


async def test_a_call_that_could_not_be_written_is_not_made_and_not_counted() -> None:
    jobs = SlowJobStore()
    meter = UsageMeter(jobs, "p1")  # type: ignore[arg-type]
    await meter.call("j")
    jobs.failing = True

    with pytest.raises(UsageNotRecorded):
        await meter.call("j")

    jobs.failing = False
    await meter.flush()
    assert jobs.stored.calls == 1


async def test_a_caller_cancelled_while_waiting_is_taken_back_and_others_go_on() -> None:
    jobs = SlowJobStore(delay_s=0.05)
    meter = UsageMeter(jobs, "p1")  # type: ignore[arg-type]
    first = asyncio.create_task(meter.call("j"))
    await asyncio.sleep(0.01)  # the first write is under way
    waiting = [asyncio.create_task(meter.call("j")) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # e.g. a drain gave up on its message

    await first
    results = await asyncio.gather(*waiting, return_exceptions=True)
    await meter.flush()

    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [None, None]
    assert jobs.stored.calls == 3  # the cancelled call was never sent


async def test_tokens_come_with_the_reply_and_cached_replies_are_counted_apart() -> None:
    jobs = SlowJobStore(delay_s=0)
    meter = UsageMeter(jobs, "p1")  # type: ignore[arg-type]
    meter.bind("j")
    bound = METER.get()
    assert bound is not None and bound.job_id == "j"

    await bound.sending()
    bound.answered(120, 30, 0.002)
    bound.cached()
    assert meter.unflushed("j") == pb.Usage(
        prompt_tokens=120, completion_tokens=30, cost_usd=0.002, cached_calls=1
    )
    await meter.flush("j")

    assert jobs.stored == pb.Usage(
        prompt_tokens=120, completion_tokens=30, cost_usd=0.002, calls=1, cached_calls=1
    )
    assert meter.unflushed("j") == pb.Usage()


async def test_a_call_counts_its_prompts_estimate_until_its_reply_or_its_failure() -> None:
    jobs = SlowJobStore(delay_s=0)
    meter = UsageMeter(jobs, "p1")  # type: ignore[arg-type]
    meter.bind("j")
    bound = METER.get()
    assert bound is not None

    await bound.sending(100)
    assert jobs.stored == pb.Usage(prompt_tokens=100, calls=1)  # written before it is sent
    bound.answered(120, 30, 0.0, 100)
    assert meter.total("j") == pb.Usage(prompt_tokens=120, completion_tokens=30, calls=1)

    await bound.sending(40)
    assert jobs.stored.prompt_tokens == 160
    bound.unanswered(40)  # no reply: the call stays counted, its estimate goes
    assert meter.total("j") == pb.Usage(prompt_tokens=120, completion_tokens=30, calls=2)

    jobs.failing = True
    with pytest.raises(UsageNotRecorded):
        await bound.sending(70)  # never sent: neither the call nor its estimate stays
    assert meter.total("j") == pb.Usage(prompt_tokens=120, completion_tokens=30, calls=2)


def test_a_prompts_estimate_is_its_utf8_bytes_over_four() -> None:
    assert prompt_estimate("") == 0
    assert prompt_estimate("abcd") == 1 and prompt_estimate("abcde") == 2
    assert prompt_estimate("日本語") == 3  # nine bytes: a character is counted by its bytes


async def test_jobs_are_counted_apart() -> None:
    jobs = SlowJobStore(delay_s=0)
    meter = UsageMeter(jobs, "p1")  # type: ignore[arg-type]

    await asyncio.gather(meter.call("a"), meter.call("b"), meter.call("a"))

    assert meter.total("a").calls == 2 and meter.total("b").calls == 1


def test_at_least_keeps_the_larger_of_each_figure() -> None:
    metered = pb.Usage(prompt_tokens=100, completion_tokens=10, cost_usd=0.5, calls=7)
    recorded = pb.Usage(prompt_tokens=120, completion_tokens=5, cost_usd=0.1, calls=5)

    at_least(metered, recorded)

    assert metered == pb.Usage(prompt_tokens=120, completion_tokens=10, cost_usd=0.5, calls=7)
