"""Which asyncio event loop a taxoforge process runs on (``TAXOFORGE_EVENT_LOOP``).

uvloop (libuv's loop, in C) is the default: the services' work is many small socket reads and
writes (a model call, a NATS publish and its ack, a gRPC call), whose scheduling costs the
standard library's loop several times more CPU. "asyncio" runs the standard loop, for a
platform uvloop does not build on or to rule it out when something misbehaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOPS", "loop_factory", "run"]

T = TypeVar("T")

EVENT_LOOPS = ("uvloop", "asyncio")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new loop of kind ``name`` (one of :data:`EVENT_LOOPS`)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, got {name!r}")


def run(main: Coroutine[Any, Any, T], name: str) -> T:
    """``asyncio.run(main)`` on a loop of kind ``name``."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
