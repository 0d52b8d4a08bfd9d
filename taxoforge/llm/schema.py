"""JSON schemas for structured output: a strict one to validate, a portable one to send."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

from pydantic import BaseModel

__all__ = ["derived", "json_schema_of", "portable_schema", "shared_schema_of", "string_list"]


def string_list(min_items: int, max_items: int, max_length: int) -> dict[str, Any]:
    """``json_schema_extra`` for a field that is a list of short strings: the bounds tell a
    constrained decoder where to stop."""
    return {
        "minItems": min_items,
        "maxItems": max_items,
        "items": {"type": "string", "maxLength": max_length},
    }


def json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """A JSON schema strict providers accept: every property required, no extra properties,
    nested models written in place (no ``$ref``: not every server's decoder follows them).

    Built once per model class (pydantic rebuilds it on every call, which cost a fifth of the
    tag step's CPU); each caller gets its own copy to change."""
    return copy.deepcopy(_schema_of(model))


def shared_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """``json_schema_of`` without the copy: the same object on every call, for callers that
    only read it (a structured call sends it on every request; copying it, and deriving its
    portable form again, was a tenth of the judge's own CPU). Never change it."""
    schema = _schema_of(model)
    _SHARED[id(schema)] = schema
    return schema


# The shared schemas handed out, by identity (they live as long as the process), and what was
# derived from each (its portable form, its JSON...), once each.
_SHARED: dict[int, dict[str, Any]] = {}
_DERIVED: dict[int, dict[Hashable, Any]] = {}

T = TypeVar("T")


def derived(schema: dict[str, Any], key: Hashable, make: Callable[[], T]) -> T:
    """``make()``, made once per schema of ``shared_schema_of`` and ``key`` and then reused
    (the schema never changes); made anew for any other schema. What it returns is shared
    too: read it, never change it."""
    if _SHARED.get(id(schema)) is not schema:
        return make()
    kept = _DERIVED.setdefault(id(schema), {})
    if key not in kept:
        kept[key] = make()
    return cast(T, kept[key])


@functools.cache
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = _inline(model.model_json_schema())

    def _close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for value in node.values():
                _close(value)
        elif isinstance(node, list):
            for value in node:
                _close(value)

    _close(schema)
    schema.pop("title", None)
    return schema


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", {})

    def _resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                merged = {
                    **_resolve(defs[ref.removeprefix("#/$defs/")]),
                    **{k: _resolve(v) for k, v in node.items() if k != "$ref"},
                }
                return merged
            return {k: _resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [_resolve(v) for v in node]
        return node

    out: dict[str, Any] = _resolve(schema)
    return out


_CONSTRAINTS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minItems",
        "maxItems",
    }
)


def portable_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without numeric and length constraints, which strict providers refuse.

    Constrained decoders (llama.cpp grammars) get the full schema; every reply is validated
    against the full model either way. For a schema of ``shared_schema_of`` the result is
    shared too (built once): read it, never change it.
    """
    return derived(schema, "portable", lambda: _portable(schema))


def _portable(schema: dict[str, Any]) -> dict[str, Any]:
    """A new tree: ``schema`` without ``_CONSTRAINTS``."""

    def _strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: _strip(v) for k, v in node.items() if k not in _CONSTRAINTS}
        if isinstance(node, list):
            return [_strip(v) for v in node]
        return node

    out: dict[str, Any] = _strip(schema)
    return out
