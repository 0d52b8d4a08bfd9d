"""The job store's recent values (job records, usage): concurrent readers share one load."""

from __future__ import annotations

import asyncio

from taxoforge.jobs.store import _Recent


class Loads:
    """Counts loads; each takes ``delay_s`` and answers the load's number."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.count = 0

    async def __call__(self, key: str) -> int:
        self.count += 1
        number = self.count
        await asyncio.sleep(self.delay_s)
        return number


async def test_readers_of_a_key_while_it_loads_share_the_load() -> None:
    loads = Loads()
    recent = _Recent(loads)
    values = await asyncio.gather(*(recent.get("j", 0.2) for _ in range(64)))
    assert loads.count == 1 and values == [1] * 64
    assert await recent.get("j", 10.0) == 1  # young enough: kept
    await asyncio.sleep(0.06)
    assert await recent.get("j", 0.01) == 2  # too old: loaded again


async def test_a_reader_that_is_cancelled_does_not_cancel_the_others_load() -> None:
    loads = Loads()
    recent = _Recent(loads)
    first = asyncio.create_task(recent.get("j", 0.2))
    await asyncio.sleep(0)
    second = asyncio.create_task(recent.get("j", 0.2))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == 1 and loads.count == 1


async def test_a_forgotten_key_is_loaded_again_and_the_older_load_is_not_kept() -> None:
    loads = Loads()
    recent = _Recent(loads)
    older = asyncio.create_task(recent.get("j", 0.2))
    await asyncio.sleep(0.01)
    recent.forget("j")  # the record changed while it loaded
    assert await recent.get("j", 0.2) == 2  # not the load under way from before
    assert await older == 1
    assert await recent.get("j", 10.0) == 2  # and the older one did not replace it
