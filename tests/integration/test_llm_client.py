"""The LLM client against the project's FAKE OpenAI-compatible server (real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel, Field

from taxoforge.errors import JobStopped, PermanentError, TransientError
from taxoforge.llm import LLMClient, StructuredOutputError
from taxoforge.llm.client import LLMRequestError
from taxoforge.llm.metering import SPEND_CHECK, prompt_estimate
from taxoforge.settings import LLMSettings
from taxoforge.testing.fake_llm import FakeLLM
from taxoforge.v1 import common_pb2 as pb
from taxoforge_cli.stack import free_port

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Say something."}]


class Verdict(BaseModel):
    rationale: str
    score: int = Field(ge=1, le=10, json_schema_extra={"enum": list(range(1, 11))})


CFG = pb.ModelConfig(model="default")


def _settings(api_base: str, **kw: Any) -> LLMSettings:
    """The fake server as the operator's ``default`` model."""
    kw = {"retries": 2, "structured_retries": 3, "timeout_s": 10, **kw}
    return LLMSettings(model="openai/fake", api_base=api_base, **kw)


@pytest.fixture
def settings(fake_llm: tuple[FakeLLM, str]) -> LLMSettings:
    return _settings(fake_llm[1])


async def test_a_completion_records_its_call(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, _base = fake_llm
    client = LLMClient(settings)
    try:
        text, call = await client.complete("generator", CFG, MESSAGES, temperature=0.5)
    finally:
        await client.close()
    assert text.strip()
    assert call.role == "generator" and call.model == "openai/fake"  # the model, not its name
    assert (
        call.usage.calls == 1 and call.usage.prompt_tokens > 0 and call.usage.completion_tokens > 0
    )
    assert len(call.prompt_sha256) == 64 and call.temperature == 0.5
    assert fake.stats.calls == 1


async def test_structured_output_is_validated(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    _fake, _base = fake_llm
    client = LLMClient(settings)
    try:
        verdict, call = await client.structured("judge", CFG, MESSAGES, Verdict)
    finally:
        await client.close()
    assert 1 <= verdict.score <= 10
    assert call.usage.calls == 1


async def test_a_malformed_reply_is_retried_then_fails_never_a_score(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, _base = fake_llm
    fake.config.malformed_pattern = "Say something"
    client = LLMClient(settings)
    try:
        with pytest.raises(StructuredOutputError, match="did not match Verdict after 3 attempts"):
            await client.structured("judge", CFG, MESSAGES, Verdict)
    finally:
        await client.close()
    assert fake.stats.calls == 3


async def test_server_errors_are_retried_then_transient(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, _base = fake_llm
    fake.config.fail_pattern = "Say something"
    fake.config.fail_status = 503
    client = LLMClient(settings)
    try:
        with pytest.raises(TransientError, match=r"HTTP 503 \(server error\)") as err:
            await client.complete("generator", CFG, MESSAGES)
    finally:
        await client.close()
    assert fake.stats.calls == 3  # one call and two retries
    assert "fake failure" not in str(err.value)  # the server's reply is not the error


class _Writes:
    """Stands in for the job store's usage writes (the meter's only call into it)."""

    def __init__(self) -> None:
        self.last = pb.Usage()

    def attach_meter(self, meter: object) -> None:
        pass

    async def record_usage(self, job_id: str, instance: str, usage: pb.Usage) -> None:
        self.last = pb.Usage()
        self.last.CopyFrom(usage)


async def test_every_request_sent_is_counted_on_the_job_retries_included(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    from taxoforge.usage import UsageMeter

    fake, _base = fake_llm
    fake.config.fail_pattern = "Say something"
    fake.config.fail_status = 503
    fake.config.fail_times = 2  # two server errors, then an answer
    writes = _Writes()
    meter = UsageMeter(writes, "p1")  # type: ignore[arg-type]
    client = LLMClient(settings)
    try:
        meter.bind("job-1")
        _text, call = await client.complete("generator", CFG, MESSAGES)
        await meter.flush()
    finally:
        await client.close()
    assert fake.stats.calls == 3
    # the item's record is one completion; the job pays for every request the server got
    assert call.usage.calls == 1
    assert writes.last.calls == 3 and writes.last.completion_tokens > 0
    # the failed requests gave their prompts' estimates back: the reply's count is what stays
    assert writes.last.prompt_tokens == call.usage.prompt_tokens


async def test_a_call_in_flight_counts_its_prompt_before_its_reply(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    from taxoforge.llm.client import _messages_json
    from taxoforge.usage import UsageMeter

    fake, _base = fake_llm
    fake.config.latency_ms = 300
    writes = _Writes()
    meter = UsageMeter(writes, "p1")  # type: ignore[arg-type]
    client = LLMClient(settings)
    try:
        meter.bind("job-1")
        sent = asyncio.create_task(client.complete("generator", CFG, MESSAGES))
        for _ in range(300):  # until the fake holds the request (3 s at most)
            if fake.stats.inflight:
                break
            await asyncio.sleep(0.01)
        # Written before the request left: every process checking the job's limit sees it.
        assert writes.last.calls == 1
        assert writes.last.prompt_tokens == prompt_estimate(_messages_json(MESSAGES)) > 0
        _text, call = await sent
        await meter.flush()
    finally:
        await client.close()
    assert writes.last.prompt_tokens == call.usage.prompt_tokens  # the reply's count replaced it
    assert writes.last.completion_tokens == call.usage.completion_tokens


async def test_a_call_that_waited_for_its_slot_is_checked_against_the_limit_when_it_gets_it(
    fake_llm: tuple[FakeLLM, str],
) -> None:
    from taxoforge.usage import UsageMeter

    fake, base = fake_llm
    fake.config.latency_ms = 100
    writes = _Writes()
    meter = UsageMeter(writes, "p1")  # type: ignore[arg-type]

    async def check() -> None:  # a limit of one token: the first call's prompt reaches it
        spent = meter.total("job-1")
        if spent.prompt_tokens + spent.completion_tokens >= 1:
            raise JobStopped("spend limit reached")

    client = LLMClient(_settings(base, max_concurrency=1))
    try:
        meter.bind("job-1")
        SPEND_CHECK.set(check)
        results = await asyncio.gather(
            *(client.complete("generator", CFG, MESSAGES, seed=n) for n in range(4)),
            return_exceptions=True,
        )
    finally:
        await client.close()
    # All four passed a check made before waiting for the one slot; only the first is sent.
    assert fake.stats.calls == 1
    assert sum(isinstance(r, JobStopped) for r in results) == 3


async def test_a_bad_request_is_not_retried(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, _base = fake_llm
    fake.config.fail_pattern = "Say something"
    fake.config.fail_status = 400
    client = LLMClient(settings)
    try:
        with pytest.raises(LLMRequestError, match=r"HTTP 400 \(request refused\)") as err:
            await client.complete("generator", CFG, MESSAGES)
    finally:
        await client.close()
    assert fake.stats.calls == 1
    assert "fake failure" not in str(err.value)


async def test_unreachable_server_is_transient() -> None:
    client = LLMClient(_settings("http://127.0.0.1:9/v1", retries=0, timeout_s=2))
    try:
        with pytest.raises(TransientError, match="could not reach the model server") as err:
            await client.complete("generator", CFG, MESSAGES)
    finally:
        await client.close()
    assert "127.0.0.1" not in str(err.value)  # the operator's address is not the tenant's


async def test_servers_without_json_schema_get_json_object(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, _base = fake_llm
    fake.config.json_object_only = True
    client = LLMClient(settings)
    try:
        first, _ = await client.structured("judge", CFG, MESSAGES, Verdict)
        second, _ = await client.structured("judge", CFG, MESSAGES, Verdict)
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
    client = LLMClient(_settings(base, max_concurrency=3))
    try:
        await asyncio.gather(*(client.complete("generator", CFG, MESSAGES) for _ in range(20)))
    finally:
        await client.close()
    assert fake.stats.calls == 20
    assert fake.stats.max_inflight == 3


async def test_many_calls_are_in_flight_at_once(
    fake_llm: tuple[FakeLLM, str], settings: LLMSettings
) -> None:
    fake, _base = fake_llm
    fake.config.latency_ms = 100
    client = LLMClient(settings)
    try:
        await asyncio.gather(*(client.complete("generator", CFG, MESSAGES) for _ in range(64)))
    finally:
        await client.close()
    assert fake.stats.max_inflight == 64


async def test_prices_give_a_cost(fake_llm: tuple[FakeLLM, str], tmp_path: Path) -> None:
    _, base = fake_llm
    models = tmp_path / "models.yaml"
    priced = {
        "model": "openai/fake",
        "api_base": base,
        "input_cost_per_million": 2.0,
        "output_cost_per_million": 8.0,
    }
    models.write_text(json.dumps({"models": {"priced": priced}}))
    client = LLMClient(_settings(base, models_file=str(models)))
    try:
        _, call = await client.complete("generator", pb.ModelConfig(model="priced"), MESSAGES)
    finally:
        await client.close()
    expected = (call.usage.prompt_tokens * 2.0 + call.usage.completion_tokens * 8.0) / 1e6
    assert call.usage.cost_usd == pytest.approx(expected)


async def test_litellm_transport_reaches_the_same_server(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    client = LLMClient(_settings(base, transport="litellm", api_key="not-needed", retries=0))
    try:
        text, call = await client.complete("generator", CFG, MESSAGES)
        verdict, _ = await client.structured("judge", CFG, MESSAGES, Verdict)
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


class Probe:
    """A server on loopback that records every request it gets (and may redirect)."""

    def __init__(self, redirect_to: str = "") -> None:
        self.requests: list[dict[str, str]] = []
        self.redirect_to = redirect_to
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"path": request.path, **request.headers})
        if self.redirect_to:
            raise web.HTTPTemporaryRedirect(self.redirect_to)
        return web.json_response({"error": "probe reply: internal secret 42"}, status=500)


@contextlib.asynccontextmanager
async def _serving(probe: Probe) -> AsyncIterator[Probe]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", probe.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    probe.base = f"http://127.0.0.1:{port}/v1"
    try:
        yield probe
    finally:
        await runner.cleanup()


OPERATOR_KEY = "sk-operator-key-0123456789"


async def test_a_model_named_by_address_reaches_nothing(
    fake_llm: tuple[FakeLLM, str],
) -> None:
    fake, base = fake_llm
    async with _serving(Probe()) as probe:
        client = LLMClient(_settings(base, api_key=OPERATOR_KEY))
        try:
            for name in (probe.base, f"openai/{probe.base}", "openai/fake"):
                with pytest.raises(LLMRequestError, match="not one the operator declared"):
                    await client.complete("generator", pb.ModelConfig(model=name), MESSAGES)
        finally:
            await client.close()
    assert probe.requests == [] and fake.stats.calls == 0


async def test_keys_go_only_to_their_endpoint_and_never_through_a_redirect(
    fake_llm: tuple[FakeLLM, str], tmp_path: Path
) -> None:
    _fake, base = fake_llm
    async with (
        _serving(Probe()) as elsewhere,
        _serving(Probe(redirect_to="")) as keyless,
        _serving(Probe()) as redirecting,
    ):
        redirecting.redirect_to = f"{elsewhere.base}/chat/completions"
        models = tmp_path / "models.yaml"
        models.write_text(
            json.dumps(
                {
                    "models": {
                        "keyless": {"model": "openai/x", "api_base": keyless.base},
                        "moved": {
                            "model": "openai/x",
                            "api_base": redirecting.base,
                            "api_key_env": "TF_TEST_MOVED_KEY",
                        },
                    }
                }
            )
        )
        os.environ["TF_TEST_MOVED_KEY"] = "sk-moved-key-0123456789"
        try:
            client = LLMClient(
                _settings(base, api_key=OPERATOR_KEY, models_file=str(models), retries=0)
            )
        finally:
            del os.environ["TF_TEST_MOVED_KEY"]
        try:
            await client.complete("generator", CFG, MESSAGES)
            with pytest.raises(TransientError, match=r"HTTP 500 \(server error\)") as failed:
                await client.complete("generator", pb.ModelConfig(model="keyless"), MESSAGES)
            with pytest.raises(LLMRequestError, match=r"HTTP 307 \(redirect not followed\)"):
                await client.complete("generator", pb.ModelConfig(model="moved"), MESSAGES)
        finally:
            await client.close()
    assert "internal secret" not in str(failed.value)
    assert len(keyless.requests) == 1 and "Authorization" not in keyless.requests[0]
    assert redirecting.requests[0]["Authorization"] == "Bearer sk-moved-key-0123456789"
    assert elsewhere.requests == []  # the redirect was not followed, with or without the key
    seen = json.dumps([keyless.requests, redirecting.requests])
    assert OPERATOR_KEY not in seen


async def test_an_embedding_model_is_not_a_chat_model(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    client = LLMClient(_settings(base))
    try:
        with pytest.raises(PermanentError, match="embedding model, not a chat model"):
            await client.complete(
                "generator", pb.ModelConfig(model="local/all-minilm-l6-v2"), MESSAGES
            )
    finally:
        await client.close()
    assert fake.stats.calls == 0
