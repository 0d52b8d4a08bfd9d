"""Fixtures for tests against real processes: nats-server, the services, the gateway, and the
project's FAKE model server (never a real model; see tests/integration/test_embedded.py)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from taxoforge.bus import Bus
from taxoforge.settings import BusSettings
from taxoforge.testing.fake_llm import FakeLLM, build_app
from taxoforge_cli.stack import Stack, StackConfig, free_port

pytestmark = pytest.mark.integration

# Fast failure handling so retries and dead letters happen in seconds, not minutes.
FAST_RETRIES = {
    "TAXOFORGE_MAX_DELIVER": "3",
    "TAXOFORGE_NAK_DELAY_S": "0.2",
    "TAXOFORGE_NAK_DELAY_MAX_S": "1",
    "TAXOFORGE_ACK_WAIT_S": "3",
    "TAXOFORGE_LLM_RETRIES": "0",
    "TAXOFORGE_DRAIN_TIMEOUT_S": "5",
}


@pytest.fixture
def nats_stack(tmp_path: Path) -> Iterator[Stack]:
    """A real nats-server with JetStream on a free port and a temporary store."""
    stack = Stack(StackConfig(data_dir=tmp_path / "stack", llm="fake", sync_always=False))
    stack.start(["nats"])
    try:
        yield stack
    finally:
        stack.stop()


@pytest_asyncio.fixture
async def bus(nats_stack: Stack) -> AsyncIterator[Bus]:
    """A connected Bus with the topology created."""
    bus = await Bus.connect(BusSettings(nats_url=nats_stack.nats_url), name="test")
    await bus.ensure_topology()
    try:
        yield bus
    finally:
        await bus.close()


@pytest_asyncio.fixture
async def fake_llm() -> AsyncIterator[tuple[FakeLLM, str]]:
    """The FAKE OpenAI-compatible server, in this test's event loop; yields (fake, api_base)."""
    fake = FakeLLM()
    runner = web.AppRunner(build_app(fake), access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield fake, f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


class FakeControl:
    """Steers the FAKE model server a stack runs as a process."""

    def __init__(self, api_base: str) -> None:
        self.base = api_base.removesuffix("/v1")

    def configure(self, **changes: object) -> None:
        httpx.post(f"{self.base}/_fake/config", json=changes, timeout=5).raise_for_status()

    def stats(self) -> dict[str, object]:
        stats: dict[str, object] = httpx.get(f"{self.base}/_fake/stats", timeout=5).json()
        return stats

    def reset(self) -> None:
        httpx.post(f"{self.base}/_fake/reset", timeout=5).raise_for_status()
        self.configure(
            latency_ms=0,
            fail_pattern=None,
            fail_times=0,
            malformed_pattern=None,
            slow_pattern=None,
            slow_ms=0,
            replies=[],
            wrong_language_pattern=None,
            wrong_language_times=0,
            position_bias=0,
            quality_by_temperature=[],
            degrade_fraction=0.0,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole suite as real processes (nats, fake model, 4 services, gateway)."""
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("stack"),
        llm="fake",
        sync_always=False,
        # Every prepare step moves its checks to its worker process at once, so the selector
        # spawning one (as on a large import) is part of every selection test.
        env={**FAST_RETRIES, "TAXOFORGE_SCREEN_WORKER_AFTER_ROWS": "0"},
    )
    with Stack(config) as running:
        yield running


@pytest.fixture
def fake(stack: Stack) -> Iterator[FakeControl]:
    """Control of the stack's fake model server, reset before and after each test."""
    control = FakeControl(stack.llm_api_base)
    control.reset()
    yield control
    control.reset()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client on the stack's gateway."""
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        yield client


def port_open(port: int) -> bool:
    """Whether something listens on a loopback port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
