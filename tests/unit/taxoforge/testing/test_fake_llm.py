"""The fake model's schema-following replies (called directly; no server is started)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from services.judge.verdicts import RubricVerdict
from taxoforge.llm.client import json_schema_of
from taxoforge.testing.fake_llm import _from_schema

SEEDS = [bytes([n]) * 8 for n in range(40)]


def _values(schema: dict[str, Any]) -> list[Any]:
    return [_from_schema(schema, seed) for seed in SEEDS]


def test_enum_values_come_from_the_enum() -> None:
    schema = {"enum": ["red", "green", "blue"]}

    values = _values(schema)

    assert set(values) <= {"red", "green", "blue"}
    assert len(set(values)) > 1


def test_integers_respect_minimum_and_maximum() -> None:
    values = _values({"type": "integer", "minimum": 3, "maximum": 5})

    assert all(isinstance(v, int) for v in values)
    assert all(3 <= v <= 5 for v in values)
    assert set(values) == {3, 4, 5}


def test_integers_default_to_one_to_ten() -> None:
    assert all(1 <= v <= 10 for v in _values({"type": "integer"}))


def test_numbers_respect_their_range() -> None:
    values = _values({"type": "number", "minimum": -2.0, "maximum": 2.0})

    assert all(-2.0 <= v <= 2.0 for v in values)


def test_booleans_and_strings() -> None:
    assert {type(v) for v in _values({"type": "boolean"})} == {bool}
    assert all(isinstance(v, str) and v for v in _values({"type": "string"}))


def test_objects_have_every_property() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "score": {"type": "integer", "minimum": 1, "maximum": 3},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
        },
    }

    for value in _values(schema):
        assert set(value) == {"name", "score", "tags"}
        assert isinstance(value["name"], str)
        assert 1 <= value["score"] <= 3
        assert 1 <= len(value["tags"]) <= 3
        assert set(value["tags"]) <= {"a", "b"}


def test_arrays_have_one_to_three_items() -> None:
    values = _values({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}})

    assert all(1 <= len(v) <= 3 for v in values)
    assert {len(v) for v in values} == {1, 2, 3}
    assert all(0 <= item <= 9 for v in values for item in v)


def test_same_seed_gives_the_same_value() -> None:
    schema = json_schema_of(RubricVerdict)

    assert _from_schema(schema, b"seed-1") == _from_schema(schema, b"seed-1")
    assert len({str(v) for v in _values(schema)}) > 1


def test_replies_validate_against_the_judge_verdict() -> None:
    schema = json_schema_of(RubricVerdict)

    for value in _values(schema):
        verdict = RubricVerdict.model_validate(value)
        assert 1 <= verdict.score <= 10


def test_replies_validate_against_a_flat_model() -> None:
    class Review(BaseModel):
        summary: str
        rating: int
        weight: float
        keep: bool
        tags: list[str]
        verdict: Literal["accept", "reject"]

    schema = json_schema_of(Review)

    for value in _values(schema):
        review = Review.model_validate(value)
        assert review.verdict in ("accept", "reject")
        assert 1 <= review.rating <= 10
