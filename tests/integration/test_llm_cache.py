"""The shared request cache's bucket against a real nats-server: reads are direct gets."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import KeyValueConfig, StorageType

from taxoforge.bus import Bus
from taxoforge.bus.topology import KV_LLM_CACHE
from taxoforge.llm import LLMClient
from taxoforge.llm.cache import RequestCache
from taxoforge.llm.types import ChatResult
from taxoforge.settings import BusSettings, LLMSettings
from taxoforge.testing.fake_llm import FakeLLM
from taxoforge.v1 import common_pb2 as pb
from taxoforge_cli.stack import Stack

pytestmark = pytest.mark.integration


async def _read(cache: RequestCache, key: str) -> ChatResult | None:
    """The entry once its put (published without waiting for an ack) has landed."""
    for _ in range(100):
        hit = await cache.get(key)
        if hit is not None:
            return hit
        await asyncio.sleep(0.02)
    return None


async def test_the_request_cache_is_read_with_direct_gets(bus: Bus) -> None:
    info = await bus.js.stream_info(f"KV_{KV_LLM_CACHE}")
    assert info.config.allow_direct
    cache = RequestCache(bus, scope="models-digest")
    result = ChatResult(
        text="réponse", prompt_tokens=3, completion_tokens=2, finish_reason="stop", raw_model="m"
    )

    assert await cache.get("k1") is None  # a miss is a miss, not an error
    await cache.put("k1", result)
    hit = await _read(cache, "k1")

    assert (await bus.kv(KV_LLM_CACHE))._direct  # nats-py uses DIRECT.GET for this bucket
    assert hit is not None
    assert (hit.text, hit.prompt_tokens, hit.completion_tokens) == ("réponse", 3, 2)
    assert (hit.finish_reason, hit.raw_model) == ("stop", "m")
    assert await RequestCache(bus, scope="other-models").get("k1") is None


async def test_a_cache_bucket_made_before_direct_gets_is_upgraded(nats_stack: Stack) -> None:
    bus = await Bus.connect(BusSettings(nats_url=nats_stack.nats_url), name="test")
    try:
        await bus.js.create_key_value(
            KeyValueConfig(
                bucket=KV_LLM_CACHE,
                history=1,
                ttl=bus.settings.llm_cache_ttl_s,
                storage=StorageType.FILE,
            )
        )
        assert not (await bus.js.stream_info(f"KV_{KV_LLM_CACHE}")).config.allow_direct

        await bus.ensure_topology()
        await bus.ensure_topology()  # and again: nothing left to change

        assert (await bus.js.stream_info(f"KV_{KV_LLM_CACHE}")).config.allow_direct
    finally:
        await bus.close()


async def test_a_write_only_call_skips_the_lookup_and_leaves_its_reply_for_a_redelivery(
    bus: Bus, fake_llm: tuple[FakeLLM, str]
) -> None:
    fake, base = fake_llm
    client = LLMClient(
        LLMSettings(model="openai/fake", api_base=base, retries=0, timeout_s=10),
        cache=RequestCache(bus),
    )
    cfg = pb.ModelConfig(model="default")
    messages = [{"role": "user", "content": "A prompt fenced with this job's markers."}]
    try:
        _, first = await client.complete("judge", cfg, messages, temperature=0.0, cache="write")
        assert not first.cached and fake.stats.calls == 1
        for _ in range(100):  # the reply was stored (published without waiting for an ack)
            _, again = await client.complete("judge", cfg, messages, temperature=0.0)
            if again.cached:
                break
            await asyncio.sleep(0.02)
        assert again.cached  # a redelivery, which looks first, finds it
        calls = fake.stats.calls
        # A write-only call never looks: the model answers although the reply is cached.
        _, written = await client.complete("judge", cfg, messages, temperature=0.0, cache="write")
        assert not written.cached and fake.stats.calls == calls + 1
    finally:
        await client.close()
