"""Which asyncio event loop a taxoforge process runs on (``TAXOFORGE_EVENT_LOOP``).

"auto", the default, is uvloop (libuv's loop, in C) where it is installed (every platform but
Windows): the services' work is many small socket reads and writes (a model call, a NATS
publish and its ack, a gRPC call), whose scheduling the standard library's loop does in Python.
"uvloop" insists on it; "asyncio" runs the standard loop, to rule uvloop out when something
misbehaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOPS", "loop_factory", "run"]

T = TypeVar("T")

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new loop of kind ``name`` (one of :data:`EVENT_LOOPS`).

    Raises:
        ValueError: an unknown kind, or "uvloop" where it is not installed.
    """
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if name == "auto":
                return asyncio.new_event_loop
            raise ValueError(
                "TAXOFORGE_EVENT_LOOP=uvloop, but uvloop is not installed here "
                "(it has no Windows build); use auto or asyncio"
            ) from exc
        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, got {name!r}")


def run(main: Coroutine[Any, Any, T], name: str) -> T:
    """``asyncio.run(main)`` on a loop of kind ``name``."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
