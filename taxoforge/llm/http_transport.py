"""A lean client for OpenAI-compatible servers (vLLM, llama.cpp, Ollama, TGI, the fake).

litellm reaches every provider but costs several milliseconds of CPU per call; with hundreds of
calls in flight to one local server that overhead, not the server, sets the pace. This transport
speaks the one protocol those servers share over :mod:`taxoforge.llm.http1`'s pooled
keep-alive connections (a third of aiohttp's CPU per call), and writes each request's JSON
from parts made once: a shared schema's response format is encoded on its first use only.
"""

from __future__ import annotations

import json
import time

from taxoforge.jsonl import loads_fields
from taxoforge.llm.endpoints import Endpoint
from taxoforge.llm.http1 import ConnectionPool, HTTPClientError, ProtocolError
from taxoforge.llm.schema import derived, portable_schema
from taxoforge.llm.types import ChatRequest, ChatResult, LLMFault

__all__ = ["HTTPTransport", "describe_status", "model_name"]

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_PROVIDER_PREFIXES = ("openai/", "hosted_vllm/", "openai_like/", "llamafile/")


def describe_status(status: int) -> str:
    """A fixed description of an HTTP status: what a fault may say instead of the reply."""
    if status == 429:
        return "rate limited"
    if status in (401, 403):
        return "the endpoint refused the operator's credentials"
    if 300 <= status < 400:
        return "redirect not followed"
    if status == 408 or status == 504:
        return "timed out at the server"
    if 400 <= status < 500:
        return "request refused"
    if status >= 500:
        return "server error"
    return "unexpected status"


def model_name(model: str) -> str:
    """The name the server knows: the litellm provider prefix removed."""
    for prefix in _PROVIDER_PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


class HTTPTransport:
    """POST /chat/completions over one shared connection pool."""

    def __init__(self) -> None:
        self._pool = ConnectionPool()
        # Servers that refused OpenAI's json_schema format; they get json_object + schema.
        self._json_object_only: set[str] = set()

    async def chat(self, endpoint: Endpoint, req: ChatRequest, timeout_s: float) -> ChatResult:
        """Make one call; a server that rejects json_schema is retried once with json_object."""
        mode = endpoint.response_format or "auto"
        if mode == "auto":
            mode = "json_object" if endpoint.name in self._json_object_only else "json_schema"
        try:
            return await self._post(endpoint, req, timeout_s, mode)
        except LLMFault as fault:
            # Servers that do not know the format say so with 400, 422 or (llama-cpp-python) 500.
            refused = fault.status is not None and "json_schema" in fault.detail
            if req.json_schema is None or not refused or mode != "json_schema":
                raise
            if endpoint.response_format not in ("", "auto"):
                raise
            self._json_object_only.add(endpoint.name)
            return await self._post(endpoint, req, timeout_s, "json_object")

    def _body(self, endpoint: Endpoint, req: ChatRequest, mode: str) -> bytes:
        """The request's JSON, written from parts: the messages as the client encoded them,
        a shared schema's response format as encoded on its first use."""
        dumps = json.dumps
        # The messages as the client wrote them already (UTF-8, keys sorted), else now.
        messages = req.messages_json or dumps(req.messages)
        parts = [
            f'{{"model": {dumps(model_name(endpoint.model))}, "messages": {messages}',
            f', "temperature": {dumps(req.temperature)}, "max_tokens": {dumps(req.max_tokens)}',
        ]
        if req.top_p is not None:
            parts.append(f', "top_p": {dumps(req.top_p)}')
        if req.seed is not None:
            parts.append(f', "seed": {dumps(req.seed)}')
        if req.json_schema is not None and mode in ("json_schema", "json_object"):
            parts.append(f', "response_format": {self._format(req, mode)}')
        parts.append("}")
        return "".join(parts).encode()

    def _format(self, req: ChatRequest, mode: str) -> str:
        schema = req.json_schema
        assert schema is not None
        name = req.schema_name

        def _encode() -> str:
            if mode == "json_schema":
                strict = {"name": name, "schema": portable_schema(schema), "strict": True}
                return json.dumps({"type": "json_schema", "json_schema": strict})
            return json.dumps({"type": "json_object", "schema": schema})

        return derived(schema, ("response_format", mode, name), _encode)

    async def _post(
        self, endpoint: Endpoint, req: ChatRequest, timeout_s: float, mode: str
    ) -> ChatResult:
        body = self._body(endpoint, req, mode)
        key = endpoint.key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = f"{endpoint.api_base.rstrip('/')}/chat/completions"
        started = time.perf_counter()
        try:
            # No redirects: the key goes to the declared endpoint and nowhere else.
            reply = await self._pool.post(url, body, headers, timeout_s)
        except TimeoutError as exc:
            raise LLMFault(f"timed out after {timeout_s:.0f}s", transient=True, detail=url) from exc
        except ProtocolError as exc:
            raise LLMFault(
                "malformed reply (not HTTP/1.1 within limits)",
                transient=True,
                detail=f"{exc} ({url})",
            ) from exc
        except HTTPClientError as exc:
            raise LLMFault(
                f"could not reach the model server ({type(exc).__name__})",
                transient=True,
                detail=f"{exc} ({url})",
            ) from exc
        except ValueError as exc:  # a declared address or key that cannot be sent
            raise LLMFault(
                "the model's address or key cannot be sent over HTTP",
                transient=False,
                detail=f"{exc}",
            ) from exc
        raw, status = reply.body, reply.status
        latency = time.perf_counter() - started
        if status != 200:
            raise LLMFault(
                f"HTTP {status} ({describe_status(status)})",
                transient=status in _TRANSIENT_STATUS,
                status=status,
                detail=f"{url}: {raw[:500].decode('utf-8', 'replace')}",
            )
        try:
            data = loads_fields(raw)  # orjson: a reply's fields read in a quarter of the time
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMFault(
                "malformed reply (not a chat completion)",
                transient=True,
                detail=f"{url}: {raw[:200]!r}",
            ) from exc
        usage = data.get("usage") or {}
        return ChatResult(
            text=content,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=str(choice.get("finish_reason") or ""),
            latency_s=latency,
            raw_model=str(data.get("model") or ""),
        )

    async def close(self) -> None:
        """Close the pool's connections."""
        await self._pool.close()
