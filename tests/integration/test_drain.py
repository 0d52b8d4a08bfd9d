"""Graceful scale-in: a judge or generator replica told to stop (SIGTERM) finishes or hands back
its in-flight work and leaves. Nothing is lost, duplicated or left stuck, and the job does not
wait for JetStream's ack_wait to redeliver anything (that is what a crash costs, not a drain)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taxoforge.bus import Bus
from taxoforge.bus.topology import CONSUMERS, DLQ_STREAM, WORK_STREAM
from taxoforge.settings import BusSettings
from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES, FakeControl
from .jobs import item_counts, records, stages, submit, wait

pytestmark = pytest.mark.integration

# Long enough that a message left unacked by the stopping replica would hold the job far past
# any limit below: the job can only finish in time if the drain finished or nak'ed its work.
ACK_WAIT_S = 60.0
# How much longer than its drain timeout a replica may take to leave (gRPC, NATS, interpreter).
EXIT_SLACK_S = 2.5

StackFactory = Callable[[str, float], Stack]


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[StackFactory]:
    """Starts a stack with a second replica of ``service``; both work two messages at a time,
    with a long ack_wait and the given drain timeout."""
    started: list[Stack] = []

    def start(service: str, drain_timeout_s: float) -> Stack:
        env = {
            "TAXOFORGE_WORKER_CONCURRENCY": "2",
            "TAXOFORGE_ACK_WAIT_S": str(ACK_WAIT_S),
            "TAXOFORGE_DRAIN_TIMEOUT_S": str(drain_timeout_s),
        }
        config = StackConfig(
            data_dir=tmp_path / "stack",
            llm="fake",
            sync_always=False,
            env=dict(FAST_RETRIES),
            service_env={service: env},
        )
        stack = Stack(config)
        started.append(stack)
        stack.start()
        stack.add_replica(service)
        return stack

    yield start
    for stack in started:
        stack.stop()


def _progress(api: httpx.Client, job_id: str, stage: str) -> int:
    return stages(api.get(f"/v1/jobs/{job_id}").json())[stage][0]


def _wait_progress(api: httpx.Client, job_id: str, stage: str, done: int) -> None:
    deadline = time.monotonic() + 30
    while _progress(api, job_id, stage) < done:
        assert time.monotonic() < deadline, f"{stage} never reached {done}"
        time.sleep(0.05)


def _stop(stack: Stack, name: str, drain_timeout_s: float) -> float:
    """SIGTERM one replica; it must exit 0 by itself (not SIGKILLed) within its drain timeout
    plus a little. Returns how long it took."""
    began = time.monotonic()
    code = stack.stop_process(name, timeout_s=drain_timeout_s + 15)
    took = time.monotonic() - began
    assert code == 0, f"{name} exited with {code} after {took:.1f}s\n{stack.tail(name)}"
    assert took < drain_timeout_s + EXIT_SLACK_S, f"{name} took {took:.1f}s to leave"
    return took


def _events(stack: Stack, name: str, event: str) -> list[dict[str, Any]]:
    out = []
    for line in (stack.log_dir / f"{name}.log").read_text().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def _drained(stack: Stack, name: str) -> tuple[int, int]:
    """How many messages the stopped replica had in flight when it began draining, and how
    many it finished in all."""
    draining = _events(stack, name, "worker_draining")
    assert len(draining) == 1, f"{name} did not drain in-flight work\n{stack.tail(name)}"
    stopped = _events(stack, name, "worker_stopped")
    assert stopped and _events(stack, name, "service_stopped"), stack.tail(name)
    return int(draining[0]["inflight"]), int(stopped[0]["processed"])


async def _queue_state(nats_url: str) -> dict[str, Any]:
    bus = await Bus.connect(BusSettings(nats_url=nats_url), name="test-drain")
    try:
        state: dict[str, Any] = {}
        for consumer in CONSUMERS:
            info = await bus.js.consumer_info(WORK_STREAM, consumer)
            state[consumer] = (info.num_pending or 0, info.num_ack_pending or 0)
            state[f"{consumer}.ack_wait"] = info.config.ack_wait
        state["work"] = (await bus.js.stream_info(WORK_STREAM)).state.messages
        state["dlq"] = (await bus.js.stream_info(DLQ_STREAM)).state.messages
        return state
    finally:
        await bus.close()


def _assert_nothing_stuck(stack: Stack, service: str) -> None:
    """Every work consumer ends with nothing pending or unacked and the work stream empty.

    The last acks may trail the job's success by moments, so this waits a few seconds: far
    less than ack_wait, which is what a stranded message would need to come back."""
    deadline = time.monotonic() + 5
    while True:
        state = asyncio.run(_queue_state(stack.nats_url))
        idle = all(state[c] == (0, 0) for c in CONSUMERS) and state["work"] == 0
        if idle or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert idle, f"work left queued or unacked: {state}"
    assert state["dlq"] == 0, f"work was dead-lettered: {state}"
    assert state[f"{service}.ack_wait"] == pytest.approx(ACK_WAIT_S), state


def _assert_each_item_once(stack: Stack, api: httpx.Client, job_id: str, count: int) -> None:
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded", job
    assert stages(job)["respond"] == (count, 0)
    assert stages(job)["judge"] == (count, 0)
    assert job["finished"] == count
    counts = item_counts(stack.nats_url, job_id)
    assert counts["instruction"] == counts["candidates"] == count, counts
    assert counts["outcome"] == counts["judgment"] == count, counts
    assert counts["response"] == counts["score"] == 2 * count, counts
    assert counts["failure"] == 0, counts
    sft = records(api, job_id, "sft")
    ids = [r["id"] for r in sft]
    assert len(ids) == len(set(ids)) == count, sorted(ids)


def _assert_every_call_charged(fake: FakeControl, api: httpx.Client, job_id: str) -> None:
    """The job is charged for every call the model served: a call is counted before it is
    sent, so one cut off by a drain is counted, and so is the item's redo.

    Services write their tokens every second, so the job's total may lag a moment."""
    deadline = time.monotonic() + 5
    while True:
        served = int(fake.stats()["calls"])  # type: ignore[call-overload]
        charged = int(api.get(f"/v1/jobs/{job_id}").json()["usage"]["calls"])
        if served == charged or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert served == charged, f"model served {served} calls, job charged {charged}"


@pytest.mark.parametrize(
    ("service", "slow_prompt", "stage", "seed"),
    [
        ("judge", "Grade the answer", "judge", 41),
        ("generator", "careful assistant", "respond", 42),  # the response prompt
    ],
)
def test_a_stopped_replica_finishes_its_work_and_leaves(
    two_replicas: StackFactory, service: str, slow_prompt: str, stage: str, seed: int
) -> None:
    drain_s = float(FAST_RETRIES["TAXOFORGE_DRAIN_TIMEOUT_S"])
    stack = two_replicas(service, drain_s)
    fake = FakeControl(stack.llm_api_base)
    fake.configure(slow_pattern=slow_prompt, slow_ms=400)
    count = 24
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        job_id = submit(api, count=count, seed=seed, max_candidates=1.0)["id"]
        _wait_progress(api, job_id, stage, 3)

        stopped = time.monotonic()
        _stop(stack, f"{service}-2", drain_s)
        assert _progress(api, job_id, stage) < count, f"{stage} ended before the stop"
        assert _drained(stack, f"{service}-2")[0] >= 1

        wait(api, job_id, limit_s=ACK_WAIT_S / 2)
        assert time.monotonic() - stopped < ACK_WAIT_S / 2
        _assert_each_item_once(stack, api, job_id, count)
        # The in-flight work was finished within the drain timeout, not thrown away.
        _assert_every_call_charged(fake, api, job_id)
    _assert_nothing_stuck(stack, service)


def test_work_that_outlasts_the_drain_timeout_is_handed_back(two_replicas: StackFactory) -> None:
    """Judging takes longer than the drain allows: the replica leaves anyway, its unfinished
    messages go back at once (nak) and the other replica does them; each item's records are
    still written once, though its model calls are made twice."""
    drain_s = 0.5
    slow_s = 3.0
    stack = two_replicas("judge", drain_s)
    fake = FakeControl(stack.llm_api_base)
    fake.configure(slow_pattern="Grade the answer", slow_ms=slow_s * 1000)
    count = 6
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        job_id = submit(api, count=count, seed=43, max_candidates=1.0)["id"]
        # Generation done, and both replicas busy: each holds two items, whose two slow score
        # calls are all the model is doing.
        _wait_progress(api, job_id, "respond", count)
        deadline = time.monotonic() + 30
        while fake.stats()["inflight"] < 8:  # type: ignore[operator]
            assert time.monotonic() < deadline, fake.stats()
            time.sleep(0.05)

        stopped = time.monotonic()
        took = _stop(stack, "judge-2", drain_s)
        assert took < slow_s, "the replica waited for work it should have handed back"
        assert _progress(api, job_id, "judge") < count
        # It held two items and finished neither: the replica that stayed judged all six.
        assert _drained(stack, "judge-2") == (2, 0)

        wait(api, job_id, limit_s=ACK_WAIT_S / 2)
        assert time.monotonic() - stopped < ACK_WAIT_S / 2
        _assert_each_item_once(stack, api, job_id, count)
        # The two handed-back items were judged again from the start: their four score calls,
        # cut off by the drain, were made again by the replica that stayed; the job is charged
        # for all eight (it was charged four short when calls were counted on their reply).
        _assert_every_call_charged(fake, api, job_id)
    _assert_nothing_stuck(stack, "judge")
