"""The HTTP transport's model names and request bodies (no request is made)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, Field

from taxoforge.llm.endpoints import Endpoint
from taxoforge.llm.http_transport import HTTPTransport, model_name
from taxoforge.llm.schema import portable_schema, shared_schema_of
from taxoforge.llm.types import ChatRequest


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("hosted_vllm/meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("openai_like/qwen2.5", "qwen2.5"),
        ("llamafile/smollm2", "smollm2"),
        ("openai/openai/nested", "openai/nested"),
    ],
)
def test_provider_prefix_is_removed(model: str, name: str) -> None:
    assert model_name(model) == name


@pytest.mark.parametrize("model", ["gpt-4o-mini", "anthropic/claude-3-5-sonnet", "fake", ""])
def test_other_names_are_unchanged(model: str) -> None:
    assert model_name(model) == model


def _old_body(endpoint: Endpoint, req: ChatRequest, mode: str) -> dict[str, Any]:
    """The body as the transport wrote it with aiohttp's ``json=``: the object it must be."""
    body: dict[str, Any] = {
        "model": model_name(endpoint.model),
        "messages": req.messages,
        "temperature": req.temperature,
        "max_tokens": req.max_tokens,
    }
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.seed is not None:
        body["seed"] = req.seed
    if req.json_schema is not None:
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": req.schema_name,
                    "schema": portable_schema(req.json_schema),
                    "strict": True,
                },
            }
        else:
            body["response_format"] = {"type": "json_object", "schema": req.json_schema}
    return body


_SCHEMA = {"type": "object", "properties": {"tags": {"type": "array", "maxItems": 5}}}
_MESSAGES = [{"role": "user", "content": 'Étiquette "ça" \u2028 \\ </script>'}]


class _Tags(BaseModel):
    tags: list[str] = Field(json_schema_extra={"maxItems": 5})


# As structured calls send it: one object per class, its response format encoded once per mode.
_SHARED = shared_schema_of(_Tags)


@pytest.mark.parametrize("mode", ["json_schema", "json_object"])
@pytest.mark.parametrize(
    "req",
    [
        ChatRequest(messages=_MESSAGES),
        ChatRequest(messages=_MESSAGES, top_p=0.9, seed=7, json_schema=_SCHEMA, schema_name="t"),
        ChatRequest(
            messages=_MESSAGES,
            messages_json=json.dumps(_MESSAGES, sort_keys=True, ensure_ascii=False),
            temperature=0.0,
            max_tokens=120,
            json_schema=_SCHEMA,
        ),
        ChatRequest(messages=_MESSAGES, json_schema=_SHARED, schema_name="tags"),
    ],
)
def test_the_body_written_from_parts_is_the_request_object(req: ChatRequest, mode: str) -> None:
    endpoint = Endpoint(name="m", model='openai/qwen "2.5"', api_base="http://x")
    transport = HTTPTransport()
    for _ in range(2):  # a shared schema's second from the encoded format kept
        assert json.loads(transport._body(endpoint, req, mode)) == _old_body(endpoint, req, mode)


def test_a_schema_changed_in_place_under_the_same_id_is_not_served_stale() -> None:
    endpoint = Endpoint(name="m", model="fake", api_base="http://x")
    transport = HTTPTransport()
    first = {"type": "object", "properties": {}}
    req = ChatRequest(messages=_MESSAGES, json_schema=first)
    transport._body(endpoint, req, "json_object")
    other = ChatRequest(messages=_MESSAGES, json_schema={"type": "array"})
    body = json.loads(transport._body(endpoint, other, "json_object"))
    assert body["response_format"]["schema"] == {"type": "array"}
