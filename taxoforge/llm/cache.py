"""A request cache every replica shares (JetStream KV): the same request to the same model
with the same sampling settings and seed is answered from the cache, not the model.

A re-run of a recipe, a redelivered message whose result was lost, or two jobs asking the same
thing reuse finished calls. Keys hash the whole request; values hold the reply and its token
counts. Entries expire after ``ttl_s``.

A request names a model by the operator's name for it; what the name stands for (model string,
address, JSON mode) is the process's models table, whose digest scopes the cache
(:meth:`RequestCache.scoped`): a name pointed at another model never gets the old one's replies.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from nats.js.errors import KeyNotFoundError

from taxoforge.bus.connection import Bus
from taxoforge.bus.topology import KV_LLM_CACHE
from taxoforge.jsonl import encode, loads_fields
from taxoforge.llm.schema import derived
from taxoforge.llm.types import ChatRequest, ChatResult
from taxoforge.v1 import common_pb2 as pb

__all__ = ["RequestCache", "request_key"]


def request_key(cfg: pb.ModelConfig, req: ChatRequest, messages_json: str | None = None) -> str:
    """A digest of everything that decides a reply.

    ``messages_json``: ``req.messages`` as ``json.dumps(messages, sort_keys=True,
    ensure_ascii=False)``, when the caller made it already (the prompt's fingerprint hashes
    it). When it is ASCII it is the very text this digest holds for the messages, so they are
    not written out again: the digest is the same either way.
    """
    if messages_json is not None and messages_json.isascii():
        # json.dumps writes a list as its items' JSON joined by ", " between brackets.
        values = (cfg.model, req.temperature, req.max_tokens, req.top_p, req.seed)
        # Typed: 1 and 1.0 are one dict key but two JSON texts.
        settings = (values, *map(type, values))
        model, rest = _SETTINGS_JSON.get(settings) or _settings_json(settings)
        schema = req.json_schema
        encoded = "null" if schema is None else derived(schema, "key", lambda: _item(schema))
        return hashlib.sha256(f"[{model}, {messages_json}, {rest}, {encoded}]".encode()).hexdigest()
    parts: list[Any] = [
        cfg.model,
        req.messages,
        req.temperature,
        req.max_tokens,
        req.top_p,
        req.seed,
        req.json_schema,
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _item(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# The JSON of recent (model, sampling settings) tuples, as the key writes them: a job's calls
# repeat a few, and writing them is most of a key's cost beside the hash.
_SETTINGS_JSON: dict[tuple[Any, ...], tuple[str, str]] = {}
_SETTINGS_KEPT = 4096


def _settings_json(settings: tuple[Any, ...]) -> tuple[str, str]:
    model, *rest = settings[0]
    made = (_item(model), ", ".join(map(_item, rest)))
    if len(_SETTINGS_JSON) >= _SETTINGS_KEPT:
        _SETTINGS_JSON.clear()  # many seeds: start again rather than grow
    _SETTINGS_JSON[settings] = made
    return made


class RequestCache:
    """Get and put replies by request key."""

    def __init__(self, bus: Bus, scope: str = "") -> None:
        self._bus = bus
        self._scope = scope

    def scoped(self, scope: str) -> RequestCache:
        """The same cache, with keys that hold only for ``scope`` (the models table's digest)."""
        return RequestCache(self._bus, scope)

    def _entry(self, key: str) -> str:
        if self._scope:
            key = hashlib.sha256(f"{self._scope}:{key}".encode()).hexdigest()
        return f"r.{key}"

    async def get(self, key: str) -> ChatResult | None:
        """The cached reply, or None."""
        kv = await self._bus.kv(KV_LLM_CACHE)
        try:
            entry = await kv.get(self._entry(key))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        data = loads_fields(entry.value)
        return ChatResult(
            text=data["text"],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            finish_reason=str(data.get("finish_reason", "")),
            raw_model=str(data.get("model", "")),
        )

    async def put(self, key: str, result: ChatResult) -> None:
        """Remember a reply."""
        value = {
            "text": result.text,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "finish_reason": result.finish_reason,
            "model": result.raw_model,
        }
        # Published without waiting for JetStream's ack: a lost entry is only a future miss, and
        # the round trip would otherwise be paid on every model call.
        await self._bus.nc.publish(f"$KV.{KV_LLM_CACHE}.{self._entry(key)}", encode(value))
