"""The event loop a process runs on: uvloop where it is installed, the standard one on request."""

from __future__ import annotations

import asyncio
import sys

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
    assert eventloop.run(_loop_type(), "auto") is uvloop.Loop  # installed here
    standard = eventloop.run(_loop_type(), "asyncio")
    assert issubclass(standard, asyncio.BaseEventLoop)
    assert not issubclass(standard, uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed

    assert eventloop.loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(ValueError, match="uvloop is not installed"):
        eventloop.loop_factory("uvloop")


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, uvloop, asyncio"):
        eventloop.loop_factory("trio")


def test_processes_pick_their_loop_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAXOFORGE_EVENT_LOOP", raising=False)
    assert ProcessSettings().event_loop == "auto"
    monkeypatch.setenv("TAXOFORGE_EVENT_LOOP", "asyncio")
    assert ProcessSettings().event_loop == "asyncio"
    monkeypatch.setenv("TAXOFORGE_EVENT_LOOP", "tokio")
    with pytest.raises(ValidationError):
        ProcessSettings()
