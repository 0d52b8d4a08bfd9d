"""Plain data passed between the client and its transports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from taxoforge.v1 import common_pb2 as pb

__all__ = ["ChatRequest", "ChatResult", "LLMFault", "Transport"]

Messages = list[dict[str, str]]


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
    """A failed call. ``transient`` faults are retried; the others are not."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class Transport(Protocol):
    """A way to reach a model: direct HTTP for OpenAI-compatible servers, or litellm."""

    async def chat(
        self, cfg: pb.ModelConfig, req: ChatRequest, api_key: str | None, timeout_s: float
    ) -> ChatResult:
        """Make one call or raise LLMFault."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
