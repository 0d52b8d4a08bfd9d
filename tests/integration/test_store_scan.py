"""KV scans return every key, even while other keys are being written."""

from __future__ import annotations

import asyncio

import pytest

from taxoforge.bus import Bus
from taxoforge.bus.topology import KV_JOBS
from taxoforge.store import scan

pytestmark = pytest.mark.integration


async def test_a_scan_never_ends_early_under_concurrent_writes(bus: Bus) -> None:
    kv = await bus.jobs_kv()
    keys = {f"usage.j-scan.inst{i}" for i in range(76)}
    for key in sorted(keys):
        await kv.put(key, b"first")
        await kv.put(key, b"second")  # history: only the last value counts
    await kv.put("usage.j-scan.gone", b"x")
    await kv.delete("usage.j-scan.gone")  # a deleted key is not returned
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            await kv.put(f"usage.j-other.w{n}-{i % 200}", b"busy")
            i += 1

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    try:
        # nats-py's own watcher ended about 1 scan in 150 of these before any value.
        for _ in range(400):
            found = {key: value async for key, value in scan(bus, KV_JOBS, "usage.j-scan.*")}
            assert set(found) == keys
            assert set(found.values()) == {b"second"}
    finally:
        stop.set()
        await asyncio.gather(*writers)
    assert [k async for k, _ in scan(bus, KV_JOBS, "usage.j-none.*")] == []
