"""The event loop a process runs on: uvloop by default, the standard one on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from pydantic import ValidationError

from taxoforge import eventloop
from taxoforge.settings import ProcessSettings


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_each_kind_runs_its_own_loop() -> None:
    assert eventloop.run(_loop_type(), "uvloop") is uvloop.Loop
    assert issubclass(eventloop.run(_loop_type(), "asyncio"), asyncio.BaseEventLoop)
    assert not issubclass(eventloop.run(_loop_type(), "asyncio"), uvloop.Loop)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="uvloop, asyncio"):
        eventloop.loop_factory("trio")


def test_processes_run_on_uvloop_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAXOFORGE_EVENT_LOOP", raising=False)
    assert ProcessSettings().event_loop == "uvloop"
    monkeypatch.setenv("TAXOFORGE_EVENT_LOOP", "asyncio")
    assert ProcessSettings().event_loop == "asyncio"
    monkeypatch.setenv("TAXOFORGE_EVENT_LOOP", "tokio")
    with pytest.raises(ValidationError):
        ProcessSettings()
