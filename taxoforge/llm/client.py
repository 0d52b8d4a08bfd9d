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
from taxoforge.llm.endpoints import CHAT_ROLES, Endpoint, ModelChoiceError, ModelRegistry
from taxoforge.llm.http_transport import HTTPTransport
from taxoforge.llm.litellm_transport import LiteLLMTransport
from taxoforge.llm.metering import METER, SPEND_CHECK, CallMeter, add_usage, prompt_estimate
from taxoforge.llm.schema import json_schema_of, shared_schema_of
from taxoforge.llm.types import (
    CacheUse,
    ChatRequest,
    ChatResult,
    LLMFault,
    Messages,
    Transport,
)
from taxoforge.settings import LLMSettings
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
    return hashlib.sha256(_messages_json(messages).encode()).hexdigest()


_CHAT_ROLES = frozenset(CHAT_ROLES)


def _messages_json(messages: Messages) -> str:
    """What ``prompt_sha256`` hashes."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


class LLMClient:
    """Calls models by role with per-model concurrency limits, retries and accounting."""

    def __init__(
        self,
        settings: LLMSettings,
        cache: RequestCache | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        """``registry``: the models this process may call (default: from ``settings``).

        Raises:
            ModelsFileError: the models file or a key it names is missing or wrong.
        """
        self._settings = settings
        self._registry = registry or ModelRegistry.from_settings(settings)
        self._cache = cache.scoped(self._registry.fingerprint()) if cache is not None else None
        self._http = HTTPTransport()
        self._litellm = LiteLLMTransport()
        self._limits: dict[str, asyncio.Semaphore] = {}

    @property
    def registry(self) -> ModelRegistry:
        """The operator's models, by name (embedders resolve theirs here too)."""
        return self._registry

    def _endpoint(self, cfg: pb.ModelConfig) -> Endpoint:
        """Where a request's model name leads: only ever an endpoint the operator declared."""
        try:
            endpoint = self._registry.get(cfg.model)
        except ModelChoiceError as exc:
            raise LLMRequestError(str(exc)) from exc
        if _CHAT_ROLES.isdisjoint(endpoint.roles):  # once per call: no sets built for it
            raise LLMRequestError(f"model {cfg.model!r} is an embedding model, not a chat model")
        return endpoint

    def _transport(self, endpoint: Endpoint) -> Transport:
        mode = self._settings.transport
        if mode == "http" or (
            mode == "auto" and endpoint.api_base and endpoint.model.startswith(_OPENAI_COMPATIBLE)
        ):
            return self._http
        return self._litellm

    def _limit(self, endpoint: Endpoint) -> asyncio.Semaphore:
        sem = self._limits.get(endpoint.name)
        if sem is None:
            sem = asyncio.Semaphore(endpoint.max_concurrency or self._settings.max_concurrency)
            self._limits[endpoint.name] = sem
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
        cache: CacheUse = True,
        repeat: int = 0,
    ) -> tuple[str, pb.LLMCall]:
        """One completion, retried on transient faults; returns the text and its call record.

        With ``cache`` (and a cache configured) a request made before, by any replica, is
        answered from the shared cache: the record says ``cached`` and counts no usage.
        ``cache="write"`` only stores the reply, for a request the caller knows was never
        made before (see :func:`taxoforge.stage.cache_use`): a lookup would be a round trip
        for a certain miss.
        ``repeat`` numbers deliberate repeats of one request (a structured reply asked again):
        each has its own cache entry, so a repeat is never answered with the reply it repeats.

        A call is counted in the usage of the job the caller bound (:data:`METER`): a paid call
        before its request is sent, a cached one apart.
        """
        if not cfg.model:
            raise LLMRequestError(f"no model is configured for the {role!r} role")
        endpoint = self._endpoint(cfg)  # resolved once: an undeclared name fails here
        # Written once: the prompt's fingerprint, the cache key (when ASCII) and the body's.
        messages_json = _messages_json(messages)
        req = ChatRequest(
            messages=messages,
            messages_json=messages_json,
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
        key = None
        if cache and self._cache is not None:
            key = request_key(cfg, req, messages_json) + (f"-{repeat}" if repeat else "")
        hit = await self._cached(key) if cache != "write" else None
        meter = METER.get()
        if hit is not None:
            result = hit
            if meter is not None:
                meter.cached()
        else:
            result = await self._call_with_retries(endpoint, req, meter)
            if key is not None:
                await self._remember(key, result)
        call = pb.LLMCall(
            role=role,
            # the model itself, not the operator's name for it: provenance outlives names
            model=endpoint.model,
            prompt_sha256=hashlib.sha256(messages_json.encode()).hexdigest(),
            latency_s=result.latency_s,
            finish_reason=result.finish_reason,
            temperature=req.temperature,
        )
        if hit is not None:
            call.cached = True  # nothing was spent
            call.usage.cached_calls = 1
        else:
            call.usage.prompt_tokens = result.prompt_tokens
            call.usage.completion_tokens = result.completion_tokens
            call.usage.calls = 1
            # the endpoint's declared prices (applied when it answered), else litellm's map
            call.usage.cost_usd = result.cost_usd or 0.0
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
        cache: CacheUse = True,
    ) -> tuple[T, pb.LLMCall]:
        """A reply validated against ``output``; invalid replies are asked again, then fail.

        Raises:
            StructuredOutputError: no reply validated after ``structured_retries`` attempts.
        """
        schema = shared_schema_of(output)  # only read: hashed into the cache key and sent
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
                repeat=attempt,
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

    async def _call_with_retries(
        self, endpoint: Endpoint, req: ChatRequest, meter: CallMeter | None = None
    ) -> ChatResult:
        """Call an endpoint the operator declared, with its own key.

        Every request sent, retries included, is counted on ``meter`` once it holds a
        concurrency slot and before it leaves (write-ahead), with its prompt's estimate until
        the reply counts it: a kill from then on leaves it counted, and a request still waiting
        for a slot is not. A job with a spend limit (:data:`SPEND_CHECK`) is checked then too,
        so a request that waited for its slot while the limit was reached is not sent.

        Faults carry a status and a fixed description only; what the server answered goes to
        this process's log (truncated), never into the error a job or an API answer shows.
        """
        transport = self._transport(endpoint)
        attempts = self._settings.retries + 1
        check = SPEND_CHECK.get()
        estimate = 0
        if meter is not None:
            written = req.messages_json
            if written is None:
                written = _messages_json(req.messages)
            estimate = prompt_estimate(written)
        for attempt in range(attempts):
            try:
                async with self._limit(endpoint):
                    if check is not None:
                        await check()  # a job over its spend limit makes no more calls
                    if meter is not None:
                        await meter.sending(estimate)
                    try:
                        result = await transport.chat(endpoint, req, self._settings.timeout_s)
                    except BaseException:
                        if meter is not None:
                            meter.unanswered(estimate)
                        raise
                priced = endpoint.cost(result.prompt_tokens, result.completion_tokens)
                if priced is not None:
                    result.cost_usd = priced  # the operator's prices over litellm's map
                if meter is not None:
                    meter.answered(
                        result.prompt_tokens,
                        result.completion_tokens,
                        result.cost_usd or 0.0,
                        estimate,
                    )
                return result
            except LLMFault as fault:
                final = not fault.transient or attempt + 1 >= attempts
                delay = min(0.5 * 2**attempt, 8.0) * (0.5 + random.random())
                (log.warning if final else log.info)(
                    "llm_fault" if final else "llm_retry",
                    model=endpoint.name,
                    error=str(fault),
                    server_said=fault.detail[:500],  # the operator's to read, not the tenant's
                    attempt=attempt + 1,
                    retry_in_s=None if final else round(delay, 2),
                )
                if not fault.transient:
                    raise LLMRequestError(f"{endpoint.name}: {fault}") from fault
                if final:
                    raise TransientError(f"{endpoint.name}: {fault}") from fault
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
