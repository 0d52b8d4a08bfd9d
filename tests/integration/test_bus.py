"""The JetStream layer against a real nats-server: topology, worker loop, dead letters, stores."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from taxoforge.bus import Bus, Stage, Worker, work_subject
from taxoforge.bus.topology import DLQ_STREAM, KV_ITEMS, WORK_STREAM, dlq_subject
from taxoforge.bus.worker import Delivery, Route
from taxoforge.errors import PermanentError
from taxoforge.jobs.store import JobStore
from taxoforge.settings import BusSettings, ServiceSettings
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

pytestmark = pytest.mark.integration


def _settings(**overrides: object) -> ServiceSettings:
    base: dict[str, object] = {
        "worker_concurrency": 4,
        "max_deliver": 3,
        "nak_delay_s": 0.05,
        "nak_delay_max_s": 0.2,
        "ack_wait_s": 2.0,
        "drain_timeout_s": 2.0,
    }
    base.update(overrides)
    return ServiceSettings(**base)  # type: ignore[arg-type]


async def _publish(bus: Bus, n: int, stage: Stage = Stage.JUDGE) -> None:
    for i in range(n):
        await bus.publish(
            work_subject(stage),
            pb.JobRef(job_id=f"m{i}"),
            msg_id=f"test.{stage.value}.{i}",
            headers={"TF-Job-Id": f"m{i}"},
        )


async def _run_until(worker: Worker, done: Callable[[], bool], limit_s: float = 20.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(limit_s):
            while not done():  # noqa: ASYNC110 - polling a test condition
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def _queue_empty(bus: Bus, consumer: str) -> bool:
    info = await bus.js.consumer_info(WORK_STREAM, consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0


def _handler(
    seen: Counter[str], behaviour: Callable[[str, int], Awaitable[None]] | None = None
) -> Callable[[Delivery], Awaitable[None]]:
    async def handle(delivery: Delivery) -> None:
        job_id = pb.JobRef.FromString(delivery.data).job_id
        seen[job_id] += 1
        if behaviour is not None:
            await behaviour(job_id, delivery.deliveries)

    return handle


async def test_topology_is_idempotent_across_connections(bus: Bus) -> None:
    other = await Bus.connect(BusSettings(nats_url=bus.settings.nats_url), name="other")
    try:
        await other.ensure_topology()
        await bus.ensure_topology()
        await bus.ensure_consumer("judge", ack_wait_s=5, max_ack_pending=100)
        await other.ensure_consumer("judge", ack_wait_s=5, max_ack_pending=100)
    finally:
        await other.close()
    names = {s.config.name for s in await bus.js.streams_info()}
    assert {WORK_STREAM, DLQ_STREAM, f"KV_{KV_ITEMS}"} <= names


async def test_publish_with_the_same_msg_id_is_stored_once(bus: Bus) -> None:
    first = await bus.publish(work_subject(Stage.JUDGE), pb.JobRef(job_id="x"), msg_id="same")
    second = await bus.publish(work_subject(Stage.JUDGE), pb.JobRef(job_id="x"), msg_id="same")
    assert not first.duplicate
    assert second.duplicate
    info = await bus.js.stream_info(WORK_STREAM)
    assert info.state.messages == 1


async def test_every_message_is_handled_once_and_acked(bus: Bus) -> None:
    seen: Counter[str] = Counter()
    await _publish(bus, 20)
    worker = Worker(bus, "judge", {Stage.JUDGE: Route(_handler(seen))}, _settings())
    await _run_until(worker, lambda: len(seen) == 20)
    assert set(seen.values()) == {1}
    assert await _queue_empty(bus, "judge")
    assert (await bus.js.stream_info(WORK_STREAM)).state.messages == 0


async def test_a_transient_fault_is_retried_until_it_succeeds(bus: Bus) -> None:
    seen: Counter[str] = Counter()

    async def flaky(job_id: str, delivery: int) -> None:
        if delivery < 2:
            raise ConnectionError("model server briefly away")

    await _publish(bus, 3)
    worker = Worker(bus, "judge", {Stage.JUDGE: Route(_handler(seen, flaky))}, _settings())
    await _run_until(worker, lambda: sum(seen.values()) == 6)
    assert dict(seen) == {"m0": 2, "m1": 2, "m2": 2}
    assert worker.dead_lettered == 0
    assert await _queue_empty(bus, "judge")


async def test_a_message_that_always_fails_lands_in_the_dead_letter_stream(bus: Bus) -> None:
    seen: Counter[str] = Counter()
    recorded: list[tuple[str, str, int]] = []

    async def broken(job_id: str, delivery: int) -> None:
        raise RuntimeError("always broken")

    async def record(delivery: Delivery, reason: str) -> None:
        recorded.append((delivery.headers["TF-Job-Id"], reason, delivery.deliveries))

    await _publish(bus, 1)
    worker = Worker(bus, "judge", {Stage.JUDGE: Route(_handler(seen, broken), record)}, _settings())
    await _run_until(worker, lambda: bool(recorded))
    assert seen["m0"] == 3  # max_deliver
    assert recorded == [("m0", "RuntimeError: always broken", 3)]
    assert await _queue_empty(bus, "judge")
    dead = await bus.js.get_last_msg(DLQ_STREAM, dlq_subject(Stage.JUDGE))
    assert pb.JobRef.FromString(dead.data).job_id == "m0"
    assert dead.headers is not None
    assert dead.headers["TF-Reason"] == "RuntimeError: always broken"
    assert dead.headers["TF-Deliveries"] == "3"


async def test_a_permanent_error_is_dead_lettered_at_once(bus: Bus) -> None:
    seen: Counter[str] = Counter()
    recorded: list[int] = []

    async def invalid(job_id: str, delivery: int) -> None:
        raise PermanentError("this item can never work")

    async def record(delivery: Delivery, reason: str) -> None:
        recorded.append(delivery.deliveries)

    await _publish(bus, 1)
    worker = Worker(
        bus, "judge", {Stage.JUDGE: Route(_handler(seen, invalid), record)}, _settings()
    )
    await _run_until(worker, lambda: bool(recorded))
    assert seen["m0"] == 1
    assert recorded == [1]


async def test_a_message_past_max_deliver_is_dead_lettered_without_running(bus: Bus) -> None:
    """A message whose handler crashed the worker every time (no nak, no ack) is not stranded."""
    await _publish(bus, 1)
    await bus.ensure_consumer("judge", ack_wait_s=0.5, max_ack_pending=10)
    sub = await bus.js.pull_subscribe_bind(durable="judge", stream=WORK_STREAM)
    for _ in range(3):  # three deliveries that are never acknowledged: crashes
        await sub.fetch(1, timeout=5)
        await asyncio.sleep(0.7)
    await sub.unsubscribe()
    seen: Counter[str] = Counter()
    recorded: list[str] = []

    async def record(delivery: Delivery, reason: str) -> None:
        recorded.append(reason)

    worker = Worker(
        bus, "judge", {Stage.JUDGE: Route(_handler(seen), record)}, _settings(ack_wait_s=0.5)
    )
    await _run_until(worker, lambda: bool(recorded))
    assert not seen, "the handler must not run again"
    assert "delivered 4 times without an ack" in recorded[0]


async def test_long_work_is_kept_alive_by_heartbeats(bus: Bus) -> None:
    seen: Counter[str] = Counter()

    async def slow(job_id: str, delivery: int) -> None:
        await asyncio.sleep(3.0)  # three times the ack wait

    await _publish(bus, 1)
    worker = Worker(
        bus, "judge", {Stage.JUDGE: Route(_handler(seen, slow))}, _settings(ack_wait_s=1.0)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(4.5)
    stop.set()
    await task
    assert seen["m0"] == 1, "redelivered while still being worked on"
    assert await _queue_empty(bus, "judge")


async def test_drain_hands_unfinished_work_back_at_once(bus: Bus) -> None:
    seen: Counter[str] = Counter()

    async def stuck(job_id: str, delivery: int) -> None:
        if delivery == 1:
            await asyncio.sleep(60)

    await _publish(bus, 2)
    settings = _settings(drain_timeout_s=0.2, ack_wait_s=30.0)
    first = Worker(bus, "judge", {Stage.JUDGE: Route(_handler(seen, stuck))}, settings)
    await _run_until(first, lambda: len(seen) == 2)  # both started, then stop: drain naks them
    second = Worker(bus, "judge", {Stage.JUDGE: Route(_handler(seen, stuck))}, settings)
    # ack_wait is 30 s: only an immediate nak lets the second worker finish them this fast.
    await _run_until(second, lambda: sum(seen.values()) == 4, limit_s=10)
    assert dict(seen) == {"m0": 2, "m1": 2}
    assert await _queue_empty(bus, "judge")


async def test_put_once_keeps_the_first_result(bus: Bus) -> None:
    items = ItemStore(bus)
    key = ItemStore.key("j-1", ItemKind.INSTRUCTION, "i1")
    first = await items.put_once(key, pb.Instruction(text="first"))
    second = await items.put_once(key, pb.Instruction(text="second"))
    assert first.text == second.text == "first"

    calls = 0

    async def make() -> pb.Instruction:
        nonlocal calls
        calls += 1
        return pb.Instruction(text="made")

    again = await items.once(key, pb.Instruction, make)
    assert again.text == "first"
    assert calls == 0


async def test_counts_are_exact_and_per_job(bus: Bus) -> None:
    items = ItemStore(bus)
    await asyncio.gather(
        *(
            items.put_once(ItemStore.key("j-a", ItemKind.OUTCOME, f"i{i}"), pb.ItemOutcome())
            for i in range(37)
        ),
        *(
            items.put_once(ItemStore.key("j-b", ItemKind.OUTCOME, f"i{i}"), pb.ItemOutcome())
            for i in range(5)
        ),
    )
    # Rewriting a key does not count twice.
    await items.put_once(ItemStore.key("j-a", ItemKind.OUTCOME, "i0"), pb.ItemOutcome())
    assert await items.count("j-a", ItemKind.OUTCOME) == 37
    assert await items.count("j-b", ItemKind.OUTCOME) == 5
    assert await items.count("j-c", ItemKind.OUTCOME) == 0


async def test_an_item_ends_exactly_once(bus: Bus) -> None:
    items = ItemStore(bus)
    judged = pb.ItemOutcome(item_id="i1", judged=True)
    assert (await items.end("j-1", "i1", judged)).judged
    await items.record_failure("j-1", Stage.JUDGE, "i1", "late failure", 3)
    outcome = await items.get(ItemStore.key("j-1", ItemKind.OUTCOME, "i1"), pb.ItemOutcome)
    assert outcome is not None and outcome.judged, "a later failure must not overwrite the end"
    assert await items.count_failed("j-1", Stage.JUDGE) == 1  # kept as history


async def test_job_updates_are_compare_and_set(bus: Bus) -> None:
    jobs = JobStore(bus)
    assert await jobs.create(pb.Job(id="j-cas", state=pb.JOB_STATE_RUNNING))
    assert not await jobs.create(pb.Job(id="j-cas"))

    def bump(job: pb.Job) -> bool:
        job.planned += 1
        return True

    await asyncio.gather(*(jobs.update("j-cas", bump) for _ in range(40)))
    job = await jobs.get("j-cas")
    assert job is not None and job.planned == 40
    assert await jobs.active() == ["j-cas"]

    def finish(job: pb.Job) -> bool:
        job.state = pb.JOB_STATE_SUCCEEDED
        return True

    finished = await jobs.update("j-cas", finish)
    assert finished is not None and finished.finished_at_ms > 0
    assert await jobs.active() == []


async def test_usage_sums_every_process_key(bus: Bus) -> None:
    jobs = JobStore(bus)
    await jobs.record_usage("j-u", "a", pb.Usage(prompt_tokens=10, completion_tokens=5, calls=2))
    await jobs.record_usage("j-u", "b", pb.Usage(prompt_tokens=1, completion_tokens=1, calls=1))
    await jobs.record_usage("j-u", "a", pb.Usage(prompt_tokens=20, completion_tokens=6, calls=3))
    total = await jobs.usage("j-u")
    assert (total.prompt_tokens, total.completion_tokens, total.calls) == (21, 7, 4)


async def test_worker_stops_promptly_when_idle(bus: Bus) -> None:
    worker = Worker(bus, "judge", {Stage.JUDGE: Route(_handler(Counter()))}, _settings())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, timeout=3)
    assert task.done()
