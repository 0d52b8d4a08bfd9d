"""Calls through litellm: every provider it knows (OpenAI, Anthropic, Bedrock, Vertex, ...)."""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from taxoforge.llm.endpoints import Endpoint
from taxoforge.llm.schema import portable_schema
from taxoforge.llm.types import ChatRequest, ChatResult, LLMFault

__all__ = ["LiteLLMTransport", "litellm_fault"]


def _litellm() -> Any:
    # litellm fetches its price map from the internet on import unless told not to, and its
    # import costs seconds: import it only in processes that call through it.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def litellm_fault(lib: Any, exc: Exception) -> LLMFault:
    """A litellm exception as a fault whose message names its kind and status, never the
    provider's reply (litellm puts that in the exception's text; it goes to ``detail``)."""
    transient = (
        lib.RateLimitError,
        lib.APIConnectionError,
        lib.Timeout,
        lib.ServiceUnavailableError,
        lib.InternalServerError,
    )
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    kind = type(exc).__name__
    message = f"{kind} (HTTP {status})" if status is not None else kind
    if isinstance(exc, transient):
        return LLMFault(message, transient=True, status=status, detail=str(exc)[:500])
    known = status is not None or hasattr(exc, "llm_provider")
    return LLMFault(
        message if known else f"unexpected error calling the model ({kind})",
        transient=known and (status is None or status >= 500),
        status=status,
        detail=str(exc)[:500],
    )


class LiteLLMTransport:
    """``litellm.acompletion`` with its own retries off: the client is the only retry loop."""

    def __init__(self) -> None:
        self._lib: Any = None

    async def chat(self, endpoint: Endpoint, req: ChatRequest, timeout_s: float) -> ChatResult:
        """Make one call; map litellm's exceptions to transient or permanent faults."""
        if self._lib is None:
            self._lib = _litellm()
        lib = self._lib
        kwargs: dict[str, Any] = {
            "model": endpoint.model,
            "messages": req.messages,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "timeout": timeout_s,
            "num_retries": 0,
        }
        if endpoint.api_base:
            kwargs["api_base"] = endpoint.api_base
        key = endpoint.key()
        if key:
            kwargs["api_key"] = key
        if req.top_p is not None:
            kwargs["top_p"] = req.top_p
        if req.seed is not None:
            kwargs["seed"] = req.seed
        if req.json_schema is not None and endpoint.response_format != "none":
            # litellm may adapt a schema to its provider in place: it gets a copy of ours,
            # which every call shares (``shared_schema_of``).
            if endpoint.response_format == "json_object":
                schema = copy.deepcopy(req.json_schema)
                kwargs["response_format"] = {"type": "json_object", "schema": schema}
            else:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": req.schema_name,
                        "schema": copy.deepcopy(portable_schema(req.json_schema)),
                        "strict": True,
                    },
                }
        started = time.perf_counter()
        try:
            resp = await lib.acompletion(**kwargs)
        except Exception as exc:  # litellm's errors subclass openai's, with a status code
            raise litellm_fault(lib, exc) from exc
        latency = time.perf_counter() - started
        choice = resp.choices[0]
        usage = getattr(resp, "usage", None)
        hidden = getattr(resp, "_hidden_params", {}) or {}
        cost = hidden.get("response_cost")
        return ChatResult(
            text=choice.message.content or "",
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=float(cost) if cost is not None else None,
            finish_reason=str(choice.finish_reason or ""),
            latency_s=latency,
            raw_model=str(getattr(resp, "model", "") or ""),
        )

    async def close(self) -> None:
        """litellm keeps its own pools; nothing to release here."""
