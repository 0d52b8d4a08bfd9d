"""The LLM client against the project's FAKE OpenAI-compatible server (real HTTP on loopback)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, Field

from taxoforge.errors import TransientError
from taxoforge.llm import LLMClient, StructuredOutputError
from taxoforge.llm.client import LLMRequestError
from taxoforge.settings import LLMSettings
from taxoforge.testing.fake_llm import FakeLLM
from taxoforge.v1 import common_pb2 as pb

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Say something."}]


class Verdict(BaseModel):
    rationale: str
    score: int = Field(ge=1, le=10, json_schema_extra={"enum": list(range(1, 11))})


def _cfg(api_base: str, **kw: object) -> pb.ModelConfig:
    return pb.ModelConfig(model="openai/fake", api_base=api_base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def settings() -> LLMSettings:
    return LLMSettings(retries=2, structured_retries=3, timeout_s=10)


async def test_a_completion_records_its_call(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, base = fake_llm
    client = LLMClient(settings)
    try:
        text, call = await client.complete("generator", _cfg(base), MESSAGES, temperature=0.5)
    finally:
        await client.close()
    assert text.strip()
    assert call.role == "generator" and call.model == "openai/fake"
    assert (
        call.usage.calls == 1 and call.usage.prompt_tokens > 0 and call.usage.completion_tokens > 0
    )
    assert len(call.prompt_sha256) == 64 and call.temperature == 0.5
    assert fake.stats.calls == 1


async def test_structured_output_is_validated(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    _fake, base = fake_llm
    client = LLMClient(settings)
    try:
        verdict, call = await client.structured("judge", _cfg(base), MESSAGES, Verdict)
    finally:
        await client.close()
    assert 1 <= verdict.score <= 10
    assert call.usage.calls == 1


async def test_a_malformed_reply_is_retried_then_fails_never_a_score(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, base = fake_llm
    fake.config.malformed_pattern = "Say something"
    client = LLMClient(settings)
    try:
        with pytest.raises(StructuredOutputError, match="did not match Verdict after 3 attempts"):
            await client.structured("judge", _cfg(base), MESSAGES, Verdict)
    finally:
        await client.close()
    assert fake.stats.calls == 3


async def test_server_errors_are_retried_then_transient(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, base = fake_llm
    fake.config.fail_pattern = "Say something"
    fake.config.fail_status = 503
    client = LLMClient(settings)
    try:
        with pytest.raises(TransientError, match="HTTP 503"):
            await client.complete("generator", _cfg(base), MESSAGES)
    finally:
        await client.close()
    assert fake.stats.calls == 3  # one call and two retries


async def test_a_bad_request_is_not_retried(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, base = fake_llm
    fake.config.fail_pattern = "Say something"
    fake.config.fail_status = 400
    client = LLMClient(settings)
    try:
        with pytest.raises(LLMRequestError, match="HTTP 400"):
            await client.complete("generator", _cfg(base), MESSAGES)
    finally:
        await client.close()
    assert fake.stats.calls == 1


async def test_unreachable_server_is_transient(settings: LLMSettings) -> None:
    client = LLMClient(LLMSettings(retries=0, timeout_s=2))
    try:
        with pytest.raises(TransientError):
            await client.complete("generator", _cfg("http://127.0.0.1:9/v1"), MESSAGES)
    finally:
        await client.close()


async def test_servers_without_json_schema_get_json_object(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, base = fake_llm
    fake.config.json_object_only = True
    client = LLMClient(settings)
    try:
        first, _ = await client.structured("judge", _cfg(base), MESSAGES, Verdict)
        second, _ = await client.structured("judge", _cfg(base), MESSAGES, Verdict)
    finally:
        await client.close()
    assert 1 <= first.score <= 10 and 1 <= second.score <= 10
    # One refused json_schema call, then json_object from then on.
    assert fake.stats.calls == 3


async def test_concurrency_per_model_is_limited(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, base = fake_llm
    fake.config.latency_ms = 50
    client = LLMClient(settings)
    try:
        await asyncio.gather(
            *(
                client.complete("generator", _cfg(base, max_concurrency=3), MESSAGES)
                for _ in range(20)
            )
        )
    finally:
        await client.close()
    assert fake.stats.calls == 20
    assert fake.stats.max_inflight == 3


async def test_many_calls_are_in_flight_at_once(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, base = fake_llm
    fake.config.latency_ms = 100
    client = LLMClient(settings)
    try:
        await asyncio.gather(
            *(client.complete("generator", _cfg(base), MESSAGES) for _ in range(64))
        )
    finally:
        await client.close()
    assert fake.stats.max_inflight == 64


async def test_prices_give_a_cost(fake_llm: tuple[FakeLLM, str], settings: LLMSettings) -> None:
    _, base = fake_llm
    cfg = _cfg(base, input_cost_per_million=2.0, output_cost_per_million=8.0)
    client = LLMClient(settings)
    try:
        _, call = await client.complete("generator", cfg, MESSAGES)
    finally:
        await client.close()
    expected = (call.usage.prompt_tokens * 2.0 + call.usage.completion_tokens * 8.0) / 1e6
    assert call.usage.cost_usd == pytest.approx(expected)


async def test_litellm_transport_reaches_the_same_server(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    client = LLMClient(LLMSettings(transport="litellm", api_key="not-needed", retries=0))
    try:
        text, call = await client.complete("generator", _cfg(base), MESSAGES)
        verdict, _ = await client.structured("judge", _cfg(base), MESSAGES, Verdict)
    finally:
        await client.close()
    assert text.strip()
    assert call.usage.prompt_tokens > 0
    assert 1 <= verdict.score <= 10
    assert fake.stats.calls == 2


async def test_a_role_without_a_model_is_refused(settings: LLMSettings) -> None:
    client = LLMClient(settings)
    try:
        with pytest.raises(LLMRequestError, match="no model is configured for the 'judge' role"):
            await client.complete("judge", pb.ModelConfig(), MESSAGES)
    finally:
        await client.close()
