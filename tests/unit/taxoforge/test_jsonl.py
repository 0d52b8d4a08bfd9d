"""JSON Lines as the selector writes them: compact, UTF-8, and no value refused or changed."""

from __future__ import annotations

import json
import math

from taxoforge import jsonl


def test_a_line_is_compact_utf8_json_ending_in_a_newline() -> None:
    value = {"query": "Qu'est-ce qu'un graphe ? 語", "tokens": 12, "score": 0.5, "tags": ["a"]}
    out = jsonl.line(value)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    assert json.loads(out) == value
    assert "語".encode() in out  # not \u-escaped
    assert b", " not in out and b": " not in out


def test_what_orjson_cannot_write_is_written_exactly_by_json() -> None:
    # An imported row's metadata may hold any JSON integer, and a side file's keys need not be
    # strings: each is written, and reads back as it was.
    huge = {"source_id": 123456789012345678901234567890, "nested": [{"n": -(2**70)}]}
    assert json.loads(jsonl.line(huge)) == huge
    assert json.loads(jsonl.line({1: "a"})) == {"1": "a"}


def test_nan_and_infinity_are_written_as_null_not_as_invalid_json() -> None:
    out = jsonl.line({"a": math.nan, "b": math.inf})
    assert json.loads(out) == {"a": None, "b": None}


def test_default_converts_what_json_has_no_type_for() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    assert json.loads(jsonl.line({"x": Odd()}, default=str)) == {"x": "odd"}
    assert json.loads(jsonl.line({"x": Odd(), "n": 2**80}, default=str)) == {"x": "odd", "n": 2**80}


def test_fields_read_back_are_the_written_ones() -> None:
    value = {"item_id": "r0000001", "tokens": 42, "judge_score": 87.5, "language": "fr"}
    assert jsonl.loads_fields(jsonl.line(value)) == value


def test_a_value_is_encoded_as_its_line_without_the_newline() -> None:
    for value in ({"text": "héllo ✓", "n": 3, "x": None}, {"big": 2**70, 1: "key"}, [1.5, "a"]):
        assert jsonl.encode(value) + b"\n" == jsonl.line(value)
        assert json.loads(jsonl.encode(value)) == json.loads(jsonl.line(value))


def test_what_orjson_will_not_read_is_read_by_json() -> None:
    """A model's reply may escape half a surrogate pair: json reads it, so it is not refused."""
    reply = b'{"choices": [{"message": {"content": "a\\ud800b"}}]}'
    assert jsonl.loads_fields(reply) == json.loads(reply)
    assert jsonl.loads_fields(reply)["choices"][0]["message"]["content"] == "a\ud800b"
