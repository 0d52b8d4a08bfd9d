"""The LLM client: one per process, shared by every stage handler in it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from taxoforge.errors import PermanentError, TransientError
from taxoforge.llm.cache import RequestCache, request_key
from taxoforge.llm.http_transport import HTTPTransport
from taxoforge.llm.litellm_transport import LiteLLMTransport
from taxoforge.llm.schema import json_schema_of
from taxoforge.llm.types import ChatRequest, ChatResult, LLMFault, Messages, Transport
from taxoforge.settings import LLMSettings
from taxoforge.usage import SPEND_CHECK, add_usage
from taxoforge.v1 import common_pb2 as pb

__all__ = ["LLMClient", "LLMRequestError", "StructuredOutputError", "json_schema_of"]

log = structlog.get_logger(__name__)

T = TypeVar("T", bound=BaseModel)

_OPENAI_COMPATIBLE = ("openai/", "hosted_vllm/", "openai_like/", "llamafile/")
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL | re.IGNORECASE)


class StructuredOutputError(PermanentError):
    """The model's replies never matched the asked schema; the item fails with this reason.

    ``call`` records what the attempts cost and how many replies were invalid.
    """

    def __init__(self, message: str, call: pb.LLMCall | None = None) -> None:
        super().__init__(message)
        self.call = call or pb.LLMCall()


class LLMRequestError(PermanentError):
    """The provider refused the request itself (bad request, unknown model, auth)."""


def prompt_sha256(messages: Messages) -> str:
    """A stable fingerprint of a rendered prompt."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


class LLMClient:
    """Calls models by role with per-model concurrency limits, retries and accounting."""

    def __init__(self, settings: LLMSettings, cache: RequestCache | None = None) -> None:
        self._settings = settings
        self._cache = cache
        self._http = HTTPTransport()
        self._litellm = LiteLLMTransport()
        self._limits: dict[tuple[str, str], asyncio.Semaphore] = {}

    def _transport(self, cfg: pb.ModelConfig) -> Transport:
        mode = self._settings.transport
        if mode == "http" or (
            mode == "auto" and cfg.api_base and cfg.model.startswith(_OPENAI_COMPATIBLE)
        ):
            return self._http
        return self._litellm

    def _limit(self, cfg: pb.ModelConfig) -> asyncio.Semaphore:
        key = (cfg.model, cfg.api_base)
        sem = self._limits.get(key)
        if sem is None:
            sem = asyncio.Semaphore(cfg.max_concurrency or self._settings.max_concurrency)
            self._limits[key] = sem
        return sem

    async def complete(
        self,
        role: str,
        cfg: pb.ModelConfig,
        messages: Messages,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        json_schema: dict[str, Any] | None = None,
        schema_name: str = "output",
        cache: bool = True,
    ) -> tuple[str, pb.LLMCall]:
        """One completion, retried on transient faults; returns the text and its call record.

        With ``cache`` (and a cache configured) a request made before, by any replica, is
        answered from the shared cache: the record says ``cached`` and counts no usage.
        """
        if not cfg.model:
            raise LLMRequestError(f"no model is configured for the {role!r} role")
        req = ChatRequest(
            messages=messages,
            temperature=_first(
                temperature, cfg.temperature if cfg.HasField("temperature") else None, 0.7
            ),
            max_tokens=int(
                _first(max_tokens, cfg.max_tokens if cfg.HasField("max_tokens") else None, 512)
            ),
            top_p=cfg.top_p if cfg.HasField("top_p") else None,
            seed=seed,
            json_schema=json_schema,
            schema_name=schema_name,
        )
        key = request_key(cfg, req) if cache and self._cache is not None else None
        hit = await self._cached(key)
        check = SPEND_CHECK.get()
        if hit is None and check is not None:
            await check()  # a job over its spend limit makes no more calls (JobStopped)
        result = hit or await self._call_with_retries(cfg, req)
        if key is not None and hit is None:
            await self._remember(key, result)
        call = pb.LLMCall(
            role=role,
            model=cfg.model,
            prompt_sha256=prompt_sha256(messages),
            latency_s=result.latency_s,
            finish_reason=result.finish_reason,
            temperature=req.temperature,
        )
        if hit is not None:
            call.cached = True  # nothing was spent
        else:
            call.usage.prompt_tokens = result.prompt_tokens
            call.usage.completion_tokens = result.completion_tokens
            call.usage.calls = 1
            call.usage.cost_usd = _cost(cfg, result)
        return result.text, call

    async def _cached(self, key: str | None) -> ChatResult | None:
        if key is None or self._cache is None:
            return None
        try:
            return await self._cache.get(key)
        except Exception as exc:  # the cache is an optimisation: a miss, not a failure
            log.warning("llm_cache_unavailable", error=str(exc))
            return None

    async def _remember(self, key: str, result: ChatResult) -> None:
        if self._cache is None:
            return
        try:
            await self._cache.put(key, result)
        except Exception as exc:
            log.warning("llm_cache_unavailable", error=str(exc))

    async def structured(
        self,
        role: str,
        cfg: pb.ModelConfig,
        messages: Messages,
        output: type[T],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        cache: bool = True,
    ) -> tuple[T, pb.LLMCall]:
        """A reply validated against ``output``; invalid replies are asked again, then fail.

        Raises:
            StructuredOutputError: no reply validated after ``structured_retries`` attempts.
        """
        schema = json_schema_of(output)
        usage = pb.Usage()
        errors: list[str] = []
        call = pb.LLMCall()
        for attempt in range(self._settings.structured_retries):
            text, call = await self.complete(
                role,
                cfg,
                messages,
                temperature=_retry_temperature(cfg, temperature, attempt),
                max_tokens=max_tokens,
                seed=None if seed is None else seed + attempt,
                json_schema=schema,
                schema_name=output.__name__,
                cache=cache,
            )
            if call.finish_reason == "length" and max_tokens is not None:
                max_tokens = min(max_tokens * 2, 4096)  # it ran out of room: give it more
            add_usage(usage, call.usage)
            try:
                parsed = _parse(output, text)
            except ValidationError as exc:
                errors.append(_short_validation(exc))
                log.info(
                    "structured_output_invalid", role=role, attempt=attempt + 1, error=errors[-1]
                )
                continue
            call.usage.CopyFrom(usage)
            call.invalid_replies = len(errors)
            return parsed, call
        call.usage.CopyFrom(usage)
        call.invalid_replies = len(errors)
        raise StructuredOutputError(
            f"{role} reply did not match {output.__name__} after "
            f"{len(errors)} attempts: {'; '.join(errors)}",
            call,
        )

    async def _call_with_retries(self, cfg: pb.ModelConfig, req: ChatRequest) -> ChatResult:
        transport = self._transport(cfg)
        key = self._settings.api_key.get_secret_value() if self._settings.api_key else None
        attempts = self._settings.retries + 1
        for attempt in range(attempts):
            try:
                async with self._limit(cfg):
                    return await transport.chat(cfg, req, key, self._settings.timeout_s)
            except LLMFault as fault:
                if not fault.transient:
                    raise LLMRequestError(f"{cfg.model}: {fault}") from fault
                if attempt + 1 >= attempts:
                    raise TransientError(f"{cfg.model}: {fault}") from fault
                delay = min(0.5 * 2**attempt, 8.0) * (0.5 + random.random())
                log.info(
                    "llm_retry", model=cfg.model, error=str(fault)[:200], retry_in_s=round(delay, 2)
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Release connection pools."""
        await self._http.close()
        await self._litellm.close()


def _retry_temperature(
    cfg: pb.ModelConfig, temperature: float | None, attempt: int
) -> float | None:
    """The same settings first; then some randomness, since a greedy retry repeats its mistake."""
    if attempt == 0:
        return temperature
    base = (
        temperature
        if temperature is not None
        else (cfg.temperature if cfg.HasField("temperature") else 0.7)
    )
    return max(base, 0.4 * attempt)


def _first(*values: float | None) -> float:
    for value in values:
        if value is not None:
            return float(value)
    raise ValueError("no value")


def _cost(cfg: pb.ModelConfig, result: ChatResult) -> float:
    if cfg.HasField("input_cost_per_million") or cfg.HasField("output_cost_per_million"):
        return (
            result.prompt_tokens * cfg.input_cost_per_million
            + result.completion_tokens * cfg.output_cost_per_million
        ) / 1e6
    return result.cost_usd or 0.0


def _parse(output: type[T], text: str) -> T:
    """Validate a reply; raw newlines inside JSON strings (small models write them) are allowed."""
    body = _strip_fence(text)
    try:
        return output.model_validate_json(body)
    except ValidationError as strict_error:
        try:
            loose = json.loads(body, strict=False)
        except ValueError:
            raise strict_error from None
        return output.model_validate(loose)


def _strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text.strip()


def _short_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "reply"
        parts.append(f"{loc}: {err['msg']}")
    return ", ".join(parts)
