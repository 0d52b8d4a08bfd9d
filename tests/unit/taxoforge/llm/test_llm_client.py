"""LLM client helpers: strict JSON schemas, reply fences, prompt fingerprints."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from taxoforge.llm.client import _strip_fence, json_schema_of, prompt_sha256
from taxoforge.llm.schema import portable_schema, shared_schema_of


class Inner(BaseModel):
    x: int
    label: str = "none"


class Outer(BaseModel):
    name: str
    inner: Inner
    many: list[Inner] = []
    maybe: Inner | None = None
    note: str | None = None


def _objects(node: Any) -> list[dict[str, Any]]:
    """Every object schema (with properties) anywhere in ``node``."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            found.append(node)
        for value in node.values():
            found.extend(_objects(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_objects(value))
    return found


def test_schema_closes_every_object_and_requires_every_property() -> None:
    schema = json_schema_of(Outer)

    objects = _objects(schema)
    assert len(objects) >= 2  # Outer and every place Inner is written in
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])


def test_schema_requires_fields_that_have_defaults() -> None:
    schema = json_schema_of(Outer)

    assert schema["required"] == ["name", "inner", "many", "maybe", "note"]
    inner = schema["properties"]["inner"]
    assert inner["required"] == ["x", "label"]
    assert inner["additionalProperties"] is False


def test_schema_writes_nested_models_in_place() -> None:
    text = json.dumps(json_schema_of(Outer))
    assert "$ref" not in text and "$defs" not in text


def test_schema_drops_the_top_title_and_does_not_touch_the_model() -> None:
    schema = json_schema_of(Outer)

    assert "title" not in schema
    # pydantic's own schema is left as it was
    assert "additionalProperties" not in Outer.model_json_schema()


def test_strip_fence_removes_json_fences() -> None:
    assert _strip_fence('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert _strip_fence('```\n{"a": 1}\n```') == '{"a": 1}'
    assert _strip_fence('  ```json {"a": 1} ```  ') == '{"a": 1}'


def test_strip_fence_leaves_plain_json_alone() -> None:
    assert _strip_fence('  {"a": 1}\n') == '{"a": 1}'
    # a fence that is not around the whole reply is kept
    text = 'Here: ```json {"a": 1}```'
    assert _strip_fence(text) == text


def test_strip_fence_output_parses() -> None:
    class Verdict(BaseModel):
        score: int

    reply = '```json\n{"score": 7}\n```'

    assert Verdict.model_validate_json(_strip_fence(reply)).score == 7


def test_prompt_sha256_is_stable() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]

    first = prompt_sha256(messages)

    assert first == prompt_sha256([dict(m) for m in messages])
    assert len(first) == 64
    # key order inside a message does not matter
    assert first == prompt_sha256([{"content": m["content"], "role": m["role"]} for m in messages])


def test_prompt_sha256_differs_for_other_messages() -> None:
    base = [{"role": "user", "content": "What is 2+2?"}]

    assert prompt_sha256(base) != prompt_sha256([{"role": "user", "content": "What is 2+3?"}])
    assert prompt_sha256(base) != prompt_sha256([{"role": "system", "content": "What is 2+2?"}])
    assert prompt_sha256(base) != prompt_sha256([*base, {"role": "user", "content": ""}])


def test_strip_fence_accepts_an_uppercase_language_tag() -> None:
    assert _strip_fence('```JSON\n{"a": 1}\n```') == '{"a": 1}'


def test_a_shared_schema_and_its_portable_form_are_built_once() -> None:
    shared = shared_schema_of(Outer)

    assert shared is shared_schema_of(Outer)  # no copy per call
    assert shared == json_schema_of(Outer)
    assert shared is not json_schema_of(Outer)  # callers that change theirs still get a copy
    assert portable_schema(shared) is portable_schema(shared)
    assert portable_schema(shared) == portable_schema(json_schema_of(Outer))


def test_the_portable_form_of_a_callers_own_schema_is_never_reused() -> None:
    mine = json_schema_of(Outer)
    first = portable_schema(mine)
    mine["properties"]["name"]["description"] = "changed"

    assert portable_schema(mine) is not first
    assert portable_schema(mine)["properties"]["name"]["description"] == "changed"
