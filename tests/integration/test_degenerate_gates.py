"""The degenerate-record gates against a FAKE model that degrades a fifth of its drafts
(empty, echo, wrong or mixed language, chatter, leaked delimiter): nothing degenerate reaches
the datasets, and every discarded candidate is on its item's stored candidates."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from taxoforge.bus import Bus
from taxoforge.degenerate import PromptSource, echo, mixed_language, not_a_request, prompt_leak
from taxoforge.settings import BusSettings
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

from .conftest import FakeControl
from .jobs import records, submit, wait

pytestmark = pytest.mark.integration


async def _scan(nats_url: str, job_id: str, kind: ItemKind, message: Any) -> list[Any]:
    bus = await Bus.connect(BusSettings(nats_url=nats_url), name="test-scan")
    try:
        return [m async for m in ItemStore(bus).scan(job_id, kind, message)]
    finally:
        await bus.close()


def test_a_degrading_model_leaves_no_degenerate_record(
    stack: Any, api: httpx.Client, fake: FakeControl
) -> None:
    fake.configure(degrade_fraction=0.2)
    try:
        job = wait(
            api,
            submit(api, count=12, languages=["en", "fr", "de"], seed=13)["id"],
            limit_s=180,
        )
    finally:
        fake.configure(degrade_fraction=0.0)
    assert job["state"] == "succeeded", job
    rejections = job["selection"]["rejections"]
    gate_reasons = {"empty", "wrong_language", "not_a_request", "prompt_leak", "mixed_language"}
    assert gate_reasons & set(rejections), rejections

    sft = records(api, job["id"], "sft")
    assert sft
    nothing = PromptSource()
    for record in sft:
        language = record["metadata"]["language"]
        by_role = {m["role"]: m["content"] for m in record["messages"]}
        instruction, response = by_role["user"], by_role["assistant"]
        assert instruction.strip() and response.strip()
        assert not_a_request(instruction) is None, instruction
        assert echo(instruction, response) is None, response
        for text in (instruction, response):
            assert prompt_leak(text, nothing) is None, text
            assert mixed_language(text, language) is None, text

    candidates = asyncio.run(_scan(stack.nats_url, job["id"], ItemKind.CANDIDATES, pb.Candidates))
    discarded = [r for c in candidates for r in c.rejected]
    assert discarded, "a fifth of the answers were degraded; some candidate was discarded"
    assert all(r.reason and r.candidate for r in discarded)
    kept = {r.text for c in candidates for r in c.responses}
    assert not any(r.text and r.text in kept for r in discarded)
