"""The worker loop every consuming service runs over its durable pull consumer.

Fetch only as many messages as there are free slots (each message's ack timer starts on
delivery), heartbeat long work with ``in_progress()``, ack after success, ``nak(delay)`` on
faults that may clear up, and move a message to the dead-letter stream when retrying cannot
help or when it has been delivered ``max_deliver`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from taxoforge.bus.connection import Bus
from taxoforge.bus.topology import WORK_STREAM, Stage, work_subject
from taxoforge.errors import JobStopped, PermanentError
from taxoforge.settings import ServiceSettings

__all__ = ["DeadLetterHook", "Delivery", "Handler", "Route", "Worker"]

log = structlog.get_logger(__name__)

_FETCH_TIMEOUT_S = 1.0
_MAX_REASON = 2000


@dataclass(frozen=True)
class Delivery:
    """One delivered message, as a stage handler sees it."""

    stage: Stage
    subject: str
    data: bytes
    headers: Mapping[str, str]
    deliveries: int
    stream_seq: int


Handler = Callable[[Delivery], Awaitable[None]]
DeadLetterHook = Callable[[Delivery, str], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """What a worker does with one stage's messages, and what it records when one is given up."""

    handler: Handler
    on_dead_letter: DeadLetterHook | None = None


@dataclass
class _InFlight:
    msg: Msg
    started: float
    last_beat: float


class Worker:
    """Runs a service's handlers over its shared durable consumer until told to stop."""

    def __init__(
        self,
        bus: Bus,
        service: str,
        routes: Mapping[Stage, Route],
        settings: ServiceSettings,
    ) -> None:
        self._bus = bus
        self._service = service
        self._routes = dict(routes)
        self._by_subject = {work_subject(stage): stage for stage in self._routes}
        self._settings = settings
        self._inflight: dict[asyncio.Task[None], _InFlight] = {}
        self._slot_free = asyncio.Event()
        self.processed = 0
        self.dead_lettered = 0

    @property
    def inflight(self) -> int:
        """Messages being worked on now."""
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and work until ``stop`` is set, then drain in-flight work."""
        s = self._settings
        await self._bus.ensure_consumer(
            self._service, ack_wait_s=s.ack_wait_s, max_ack_pending=s.max_ack_pending
        )
        sub = await self._bus.js.pull_subscribe_bind(durable=self._service, stream=WORK_STREAM)
        beat = asyncio.create_task(self._heartbeat(stop), name="heartbeat")
        log.info("worker_started", consumer=self._service, concurrency=s.worker_concurrency)
        try:
            while not stop.is_set():
                free = s.worker_concurrency - len(self._inflight)
                if free <= 0:
                    self._slot_free.clear()
                    await _wait_any(self._slot_free, stop)
                    continue
                try:
                    msgs = await sub.fetch(batch=free, timeout=_FETCH_TIMEOUT_S)
                except TimeoutError:  # nothing to do (nats' TimeoutError subclasses it)
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                    break
                except Exception as exc:  # a reconnect in progress, a server restart, ...
                    log.warning("fetch_failed", error=f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(1.0)
                    continue
                for msg in msgs:
                    now = time.monotonic()
                    task = asyncio.create_task(self._process(msg))
                    self._inflight[task] = _InFlight(msg, now, now)
                    task.add_done_callback(self._done)
        finally:
            await self._drain()
            beat.cancel()
            await _hand_back_late(sub)
            with contextlib.suppress(Exception):  # already closed by a drain
                await sub.unsubscribe()
            log.info("worker_stopped", processed=self.processed, dead_lettered=self.dead_lettered)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._slot_free.set()

    async def _drain(self) -> None:
        """Give in-flight work ``drain_timeout_s`` to finish; hand the rest back at once."""
        if not self._inflight:
            return
        tasks = list(self._inflight)
        log.info("worker_draining", inflight=len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=self._settings.drain_timeout_s)
        for task in pending:
            task.cancel()  # _process naks the message with no delay
        if pending:
            await asyncio.wait(pending, timeout=5.0)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Tell the server that long work is still alive, so it is not redelivered meanwhile."""
        period = max(self._settings.ack_wait_s / 3.0, 0.05)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for entry in list(self._inflight.values()):
                if now - entry.last_beat >= period:
                    entry.last_beat = now
                    try:
                        await entry.msg.in_progress()
                    except Exception as exc:
                        log.warning("heartbeat_failed", error=str(exc))

    async def _process(self, msg: Msg) -> None:
        meta = msg.metadata
        stage = self._by_subject.get(msg.subject)
        delivery = Delivery(
            stage=stage or Stage.PLAN,
            subject=msg.subject,
            data=msg.data,
            headers=dict(msg.headers or {}),
            deliveries=meta.num_delivered,
            stream_seq=meta.sequence.stream,
        )
        structlog.contextvars.bind_contextvars(
            stage=delivery.stage.value, delivery=delivery.deliveries
        )
        started = time.monotonic()
        route = self._routes.get(stage) if stage else None
        limit = self._settings.max_deliver
        if route is None:
            await self._dead_letter(msg, delivery, None, f"no handler for subject {msg.subject}")
            return
        if delivery.deliveries > limit:
            reason = (
                f"delivered {delivery.deliveries} times without an ack "
                f"(the worker crashed or timed out each time); limit is {limit}"
            )
            await self._dead_letter(msg, delivery, route, reason)
            return
        try:
            await route.handler(delivery)
        except JobStopped as exc:  # the job ended meanwhile: its work is dropped, not failed
            log.info("work_dropped", reason=str(exc))
            await _quietly(msg.ack())
        except PermanentError as exc:
            await self._dead_letter(msg, delivery, route, str(exc))
        except asyncio.CancelledError:
            await _quietly(msg.nak(delay=0))
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if delivery.deliveries >= limit:
                await self._dead_letter(msg, delivery, route, reason)
            else:
                delay = self._backoff(delivery.deliveries)
                log.warning("work_retry", error=reason, retry_in_s=delay)
                await _quietly(msg.nak(delay=delay))
        else:
            self.processed += 1
            await _quietly(msg.ack())
            log.debug("work_done", ms=round((time.monotonic() - started) * 1000, 1))

    def _backoff(self, deliveries: int) -> float:
        s = self._settings
        return float(min(s.nak_delay_s * 2 ** (deliveries - 1), s.nak_delay_max_s))

    async def _dead_letter(
        self, msg: Msg, delivery: Delivery, route: Route | None, reason: str
    ) -> None:
        """Copy to the dead-letter stream, record the failure, then remove it from the queue."""
        reason = reason[:_MAX_REASON]
        headers = {
            **delivery.headers,
            "Nats-Msg-Id": f"dlq.{delivery.stream_seq}",
            "TF-Original-Msg-Id": delivery.headers.get("Nats-Msg-Id", ""),
            "TF-Reason": reason.replace("\r", " ").replace("\n", " "),
            "TF-Deliveries": str(delivery.deliveries),
            "TF-Subject": delivery.subject,
            "TF-Service": self._service,
        }
        try:
            dlq = f"tf.dlq.{delivery.subject.rsplit('.', 1)[-1]}"
            await self._bus.js.publish(dlq, delivery.data, headers=headers)
            if route is not None and route.on_dead_letter is not None:
                await route.on_dead_letter(delivery, reason)
            await msg.term()
        except Exception as exc:
            # Leave it queued; the next delivery tries again.
            log.warning("dead_letter_failed", error=f"{type(exc).__name__}: {exc}")
            await _quietly(msg.nak(delay=self._backoff(delivery.deliveries)))
            return
        self.dead_lettered += 1
        log.error("dead_lettered", reason=reason)


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _quietly(aw: Awaitable[object]) -> None:
    try:
        await aw
    except Exception as exc:
        log.warning("ack_failed", error=f"{type(exc).__name__}: {exc}")


async def _hand_back_late(sub: JetStreamContext.PullSubscription) -> None:
    """Nak what arrived after a fetch had given up: nats-py queues it for the next fetch,
    which a stopping worker never makes, so it would wait out ack_wait on the server."""
    if not sub.pending_msgs:
        return
    queue = _pending_queue(sub)
    while not queue.empty():
        with contextlib.suppress(Exception):
            await queue.get_nowait().nak()


def _pending_queue(sub: JetStreamContext.PullSubscription) -> asyncio.Queue[Msg]:
    """The subscription's buffer of delivered messages, private to nats-py (pinned, 2.16).

    nats-py only counts it publicly (``pending_msgs``); ``fetch()`` would empty it, but it
    also asks the server for more work, which a stopping worker must not take.
    """
    queue: asyncio.Queue[Msg] = sub._sub._pending_queue  # type: ignore[union-attr]
    return queue
