"""Plain data passed between the client and its transports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from taxoforge.llm.endpoints import Endpoint

__all__ = ["CacheUse", "ChatRequest", "ChatResult", "LLMFault", "Transport"]

Messages = list[dict[str, str]]
# How a call uses the shared request cache: read and write (True), not at all (False), or
# "write" only (a request the caller knows was never made before).
CacheUse = bool | Literal["write"]


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make."""

    messages: Messages
    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    # ``messages`` as JSON, when the caller wrote it already (any key order): sent as is.
    messages_json: str | None = None


@dataclass
class ChatResult:
    """What came back, with the numbers accounting needs."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    finish_reason: str = ""
    latency_s: float = 0.0
    raw_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class LLMFault(Exception):
    """A failed call. ``transient`` faults are retried; the others are not.

    The message is short and fixed (a status and what it means): it may reach a tenant in a
    job's error. ``detail`` holds what the server said, for the operator's log only: a model
    server's reply is never shown to tenants, as it may come from anywhere inside.
    """

    def __init__(
        self, message: str, *, transient: bool, status: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.detail = detail


class Transport(Protocol):
    """A way to reach a model: direct HTTP for OpenAI-compatible servers, or litellm."""

    async def chat(self, endpoint: Endpoint, req: ChatRequest, timeout_s: float) -> ChatResult:
        """Make one call to ``endpoint`` (with its own key, if any) or raise LLMFault."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
