"""All model calls go through here: roles mapped to models, structured output, accounting."""

from taxoforge.llm.client import LLMClient, StructuredOutputError
from taxoforge.llm.types import ChatRequest, ChatResult

__all__ = ["ChatRequest", "ChatResult", "LLMClient", "StructuredOutputError"]
