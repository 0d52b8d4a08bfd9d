"""The fake model's schema-following replies (called directly; no server is started)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from services.judge.verdicts import RubricVerdict
from taxoforge.langid import check_language, check_segments
from taxoforge.llm.client import json_schema_of
from taxoforge.testing import fake_llm
from taxoforge.testing.fake_llm import (
    DEGRADE_KINDS,
    FakeConfig,
    FakeLLM,
    _from_schema,
    _judge_by_markers,
    degraded,
)

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
        _judge_by_markers(value, schema, "no markers", 0.0)  # as the server answers a judge
        verdict = RubricVerdict.model_validate(value)  # substance included: aspects agree
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


# ---- degrade mode ----


def _prompt(language: str = "French") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"You write requests. You write in {language}."},
        {"role": "user", "content": f"Write one request about gravity in {language}."},
    ]


def test_degrade_hits_about_the_asked_fraction_and_is_deterministic() -> None:
    seeds = [hashlib.sha256(str(n).encode()).digest() for n in range(2000)]

    hits = [degraded(_prompt(), s, 0.2, list(DEGRADE_KINDS)) for s in seeds]
    again = [degraded(_prompt(), s, 0.2, list(DEGRADE_KINDS)) for s in seeds]

    assert hits == again
    assert 0.17 < sum(h is not None for h in hits) / len(hits) < 0.23
    assert degraded(_prompt(), seeds[0], 0.0, list(DEGRADE_KINDS)) is None


def test_each_kind_of_degraded_reply_is_what_it_says() -> None:
    seed = b"some request"

    def one(kind: str) -> str:
        reply = degraded(_prompt(), seed, 1.0, [kind])
        assert reply is not None
        return reply

    assert one("empty") == ""
    assert one("echo") == _prompt()[1]["content"]
    assert not check_language(one("wrong_language"), "fr").ok
    assert check_language(one("mixed_language"), "fr").ok
    assert not check_segments(one("mixed_language"), "fr").ok
    assert "<</instruction-" in one("delimiter")
    assert one("chatter") in fake_llm._CHATTER


async def test_degrade_applies_to_text_replies_never_to_json_ones() -> None:
    fake = FakeLLM(FakeConfig(degrade_fraction=1.0, degrade_kinds=["empty"]))
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}

    async def ask(body: dict[str, Any]) -> str:
        class _Request:
            async def json(self) -> dict[str, Any]:
                return body

        response = await fake.chat(_Request())  # type: ignore[arg-type]
        return str(json.loads(response.body)["choices"][0]["message"]["content"])  # type: ignore[arg-type]

    assert await ask({"messages": _prompt(), "seed": 1}) == ""
    judged = await ask(
        {
            "messages": _prompt(),
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
        }
    )
    assert isinstance(json.loads(judged)["score"], int)


def test_the_cli_takes_the_degrade_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[FakeConfig] = []
    monkeypatch.setattr(fake_llm.web, "run_app", lambda app, **_: None)
    monkeypatch.setattr(fake_llm, "FakeLLM", lambda config: seen.append(config))
    monkeypatch.setattr(fake_llm, "build_app", lambda fake: None)

    fake_llm.main(["--degrade-fraction", "0.2", "--degrade-kinds", "empty,echo"])
    monkeypatch.setenv("FAKE_LLM_DEGRADE_FRACTION", "0.5")
    fake_llm.main([])

    assert (seen[0].degrade_fraction, seen[0].degrade_kinds) == (0.2, ["empty", "echo"])
    assert (seen[1].degrade_fraction, seen[1].degrade_kinds) == (0.5, list(DEGRADE_KINDS))
    with pytest.raises(SystemExit):
        fake_llm.main(["--degrade-kinds", "nonsense"])
