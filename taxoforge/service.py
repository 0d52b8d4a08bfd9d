"""The lifecycle every service process shares: connect, serve gRPC, run workers, drain.

A service supplies only what is its own (servicers and stage routes) through
``build(ctx) -> ServiceParts``, over a context it opens on the process's bus
(:class:`taxoforge.context.ServiceContext`: the job and item stores, the model client, the
usage meter); this module does the rest the same way for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
import structlog

from taxoforge import eventloop
from taxoforge.bus import Bus, Stage, Worker
from taxoforge.bus.worker import Route
from taxoforge.grpc_server import start_grpc_server
from taxoforge.logging import configure_logging, secret_values
from taxoforge.settings import ServiceSettings

__all__ = ["Runtime", "ServiceParts", "instance_id", "run", "serve"]

log = structlog.get_logger(__name__)

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Runtime(Protocol):
    """What the lifecycle asks of the context a service is built on, besides its parts."""

    async def run(self, stop: asyncio.Event) -> None:
        """Upkeep while the process serves, until ``stop``."""
        ...

    async def drain(self) -> None:
        """Once the workers and background tasks have stopped, before gRPC stops."""
        ...

    async def close(self) -> None:
        """Once gRPC has stopped, before the bus closes."""
        ...


C = TypeVar("C", bound=Runtime)
S = TypeVar("S", bound=ServiceSettings)


@dataclass
class ServiceParts:
    """What a service adds to the shared lifecycle."""

    register: Callable[[grpc.aio.Server], None]
    service_names: Sequence[str]
    routes: Mapping[Stage, Route] = field(default_factory=dict)
    background: Sequence[Background] = ()
    # Run to completion before the service reports SERVING and starts its workers.
    startup: Sequence[Background] = ()


def instance_id() -> str:
    """A name for this process that no other process (or restart of this one) shares."""
    host = socket.gethostname().split(".")[0][:24].replace("_", "-")
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def run(
    name: str,
    open_context: Callable[[str, S, Bus, str], C],
    build: Callable[[C], ServiceParts],
    settings_type: type[S],
) -> None:
    """Entry point of ``python -m services.<name>``: settings from env, then serve until SIGTERM."""
    settings = settings_type()
    configure_logging(
        settings.log_level, settings.log_format, service=name, secrets=secret_values(settings)
    )
    eventloop.run(serve(name, open_context, build, settings), settings.event_loop)


async def serve(
    name: str,
    open_context: Callable[[str, S, Bus, str], C],
    build: Callable[[C], ServiceParts],
    settings: S,
    stop: asyncio.Event | None = None,
) -> None:
    """Run one service until ``stop`` is set or SIGTERM/SIGINT arrives, then drain."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    bus = await Bus.connect(settings.bus, name=f"taxoforge-{name}")
    await bus.ensure_topology()
    instance = instance_id()
    ctx = open_context(name, settings, bus, instance)
    parts = build(ctx)
    for step in parts.startup:
        await step(stop)
    # Everything made so far (imported modules, the service's parts) lives as long as the
    # process: out of the collector's sight, so its full collections only walk what jobs make.
    gc.freeze()
    grpc_server = await start_grpc_server(
        settings.grpc_host,
        settings.grpc_port,
        parts.register,
        parts.service_names,
        reflection_on=settings.grpc_reflection,
    )
    log.info("service_ready", grpc_port=grpc_server.port, instance=instance)

    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(ctx.run(stop), name="upkeep"),
        asyncio.create_task(_watch_connection(bus, grpc_server.set_ready, stop), name="readiness"),
    ]
    if parts.routes:
        worker = Worker(bus, name, parts.routes, settings)
        tasks.append(asyncio.create_task(worker.run(stop), name="worker"))
    tasks += [asyncio.create_task(bg(stop), name="background") for bg in parts.background]

    failed: BaseException | None = None
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stopper and task.exception() is not None:
            failed = task.exception()
            log.error("task_crashed", task=task.get_name(), error=repr(failed))
    stop.set()
    log.info("service_stopping")
    await grpc_server.set_ready(False)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            failed = failed or result
    await ctx.drain()
    await grpc_server.stop(grace_s=5.0)
    await ctx.close()
    await bus.close()
    log.info("service_stopped")
    if failed is not None:
        raise SystemExit(1)


async def _watch_connection(
    bus: Bus, set_ready: Callable[[bool], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Readiness follows the NATS connection: a replica that cannot reach NATS takes no traffic."""
    ready = True
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        connected = bus.nc.is_connected
        if connected != ready:
            ready = connected
            await set_ready(ready)
