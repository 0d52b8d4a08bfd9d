"""Imports: JSON Lines and Parquet rows in every accepted shape, malformed rows, streaming."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.selector.examples import Example, Message
from services.selector.imports import (
    MAX_RECORD_BYTES_CEILING,
    PARQUET_BATCH_ROWS,
    ImportFileError,
    ImportLimits,
    MalformedRow,
    MalformedRowError,
    TooLargeRow,
    detect_format,
    read_examples,
    sniff_format,
    to_example,
)
from taxoforge.tokens import messages_tokens


def _m(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


def _msg(role: str, content: str) -> Message:
    return Message(role=role, content=content)


def _sft(user: str = "What is 2+2?", reply: str = "4.") -> dict[str, Any]:
    return {"messages": [_m("user", user), _m("assistant", reply)]}


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One line per row: a str is written as the raw line, anything else as JSON."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _write(tmp_path: Path, fmt: str, rows: list[dict[str, Any]]) -> Path:
    if fmt == "jsonl":
        return _write_jsonl(tmp_path / "rows.jsonl", rows)
    return _write_parquet(tmp_path / "rows.parquet", rows)


def _read(path: Path, shape: str = "auto") -> list[Example | MalformedRow]:
    return list(read_examples(path, sniff_format(path), shape, "job"))


def _examples(path: Path, shape: str = "auto") -> list[Example]:
    rows = _read(path, shape)
    bad = [r for r in rows if isinstance(r, MalformedRow)]
    assert not bad
    return [r for r in rows if not isinstance(r, MalformedRow)]


def _one(path: Path, shape: str = "auto") -> Example:
    examples = _examples(path, shape)
    assert len(examples) == 1
    return examples[0]


def _reason(row: Any, shape: str = "auto") -> str:
    with pytest.raises(MalformedRowError) as caught:
        to_example(row, 1, "job", shape)
    return str(caught.value)


# ---- shapes, from JSON Lines and Parquet ----


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_messages_row_becomes_an_example_with_query_response_and_tokens(
    tmp_path: Path, fmt: str
) -> None:
    messages = [
        _m("system", "Be brief."),
        _m("user", "Name a colour."),
        _m("assistant", "Blue."),
        _m("user", "Another?"),
        _m("assistant", "Red."),
    ]
    example = _one(_write(tmp_path, fmt, [{"messages": messages}]))

    assert example["id"] == "job/r0000001"
    assert example["item_id"] == "r0000001"
    assert example["row"] == 1
    assert example["shape"] == "messages"
    assert example["messages"] == messages
    assert example["query"] == "Name a colour.\n\nAnother?"
    assert example["response"] == "Red."
    assert example["tokens"] == messages_tokens(messages)
    assert example["tokens"] > 5 * 4
    assert example["metadata"] == {}
    assert "prompt" not in example


def test_openai_text_parts_are_joined_into_the_turns_text() -> None:
    parts = [{"type": "text", "text": "First part."}, {"type": "text", "text": "Second part."}]
    row = {"messages": [_m("user", parts), _m("assistant", [{"type": "text", "text": "Ok."}])]}

    example = to_example(row, 1, "job")

    assert example["messages"] == [
        _msg("user", "First part.\nSecond part."),
        _msg("assistant", "Ok."),
    ]
    assert example["query"] == "First part.\nSecond part."


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_alpaca_row_puts_the_instruction_and_input_in_the_user_turn(
    tmp_path: Path, fmt: str
) -> None:
    row = {
        "instruction": "Translate to French.",
        "input": "Good morning",
        "output": "Bonjour",
        "system": "You translate.",
    }
    example = _one(_write(tmp_path, fmt, [row]))

    assert example["shape"] == "alpaca"
    assert example["messages"] == [
        _msg("system", "You translate."),
        _msg("user", "Translate to French.\n\nGood morning"),
        _msg("assistant", "Bonjour"),
    ]
    assert example["query"] == "Translate to French.\n\nGood morning"
    assert example["response"] == "Bonjour"
    assert example["metadata"] == {}


@pytest.mark.parametrize("given", [{"input": ""}, {"input": "  \n"}, {}])
def test_an_alpaca_row_with_no_input_is_the_instruction_alone(given: dict[str, str]) -> None:
    row = {"instruction": "Say hi.", "output": "Hi!", "system": "", **given}

    example = to_example(row, 1, "job")

    assert example["messages"] == [_msg("user", "Say hi."), _msg("assistant", "Hi!")]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_sharegpt_row_maps_human_and_gpt_to_user_and_assistant(tmp_path: Path, fmt: str) -> None:
    turns = [
        {"from": "system", "value": "Be kind."},
        {"from": "human", "value": "Hello?"},
        {"from": "gpt", "value": "Hi there."},
    ]
    example = _one(_write(tmp_path, fmt, [{"conversations": turns}]))

    assert example["shape"] == "sharegpt"
    assert example["messages"] == [
        _msg("system", "Be kind."),
        _msg("user", "Hello?"),
        _msg("assistant", "Hi there."),
    ]
    assert example["query"] == "Hello?"
    assert example["response"] == "Hi there."


def test_a_sharegpt_system_field_becomes_the_first_turn() -> None:
    row = {
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
        "system": "Be brief.",
    }

    example = to_example(row, 1, "job")

    assert example["messages"][0] == _msg("system", "Be brief.")
    assert "system" not in example["metadata"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_string_preference_row_is_a_user_prompt_and_assistant_replies(
    tmp_path: Path, fmt: str
) -> None:
    row = {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}
    example = _one(_write(tmp_path, fmt, [row]))

    assert example["shape"] == "preference"
    assert example["prompt"] == [_msg("user", "The sky is")]
    assert example["chosen"] == [_msg("assistant", " blue.")]
    assert example["rejected"] == [_msg("assistant", " green.")]
    assert example["messages"] == [_msg("user", "The sky is"), _msg("assistant", " blue.")]
    assert example["query"] == "The sky is"
    assert example["response"] == " blue."


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_conversational_preference_row_keeps_its_prompt_turns(tmp_path: Path, fmt: str) -> None:
    prompt = [_m("system", "Be kind."), _m("user", "What colour is the sky?")]
    row = {
        "prompt": prompt,
        "chosen": [_m("assistant", "Blue.")],
        "rejected": [_m("assistant", "Green.")],
    }
    example = _one(_write(tmp_path, fmt, [row]))

    assert example["prompt"] == prompt
    assert example["chosen"] == [_msg("assistant", "Blue.")]
    assert example["rejected"] == [_msg("assistant", "Green.")]
    assert example["messages"] == [*prompt, _msg("assistant", "Blue.")]
    assert example["query"] == "What colour is the sky?"
    assert example["response"] == "Blue."


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_implicit_prompt_row_splits_at_the_longest_common_prefix(
    tmp_path: Path, fmt: str
) -> None:
    shared = [_m("user", "Hi"), _m("assistant", "Hello."), _m("user", "Sky colour?")]
    row = {
        "chosen": [*shared, _m("assistant", "Blue.")],
        "rejected": [*shared, _m("assistant", "Green.")],
    }
    example = _one(_write(tmp_path, fmt, [row]))

    assert example["prompt"] == shared
    assert example["chosen"] == [_msg("assistant", "Blue.")]
    assert example["rejected"] == [_msg("assistant", "Green.")]
    assert example["messages"] == [*shared, _msg("assistant", "Blue.")]
    assert example["query"] == "Hi\n\nSky colour?"
    assert example["response"] == "Blue."


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_openai_dpo_row_is_a_preference_example(tmp_path: Path, fmt: str) -> None:
    row = {
        "input": {"messages": [_m("user", "Sky colour?")], "parallel_tool_calls": False},
        "preferred_output": [_m("assistant", "Blue.")],
        "non_preferred_output": [_m("assistant", "Green.")],
    }
    example = _one(_write(tmp_path, fmt, [row]))

    assert example["shape"] == "preference"
    assert example["prompt"] == [_msg("user", "Sky colour?")]
    assert example["chosen"] == [_msg("assistant", "Blue.")]
    assert example["rejected"] == [_msg("assistant", "Green.")]
    assert example["response"] == "Blue."
    assert example["metadata"] == {"input": {"parallel_tool_calls": False}}


def test_preference_tokens_count_the_prompt_and_the_chosen_reply_only() -> None:
    short = {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}
    long = {**short, "rejected": "Green, " * 500}

    tokens = to_example(short, 1, "job")["tokens"]

    assert tokens == messages_tokens([_m("user", "Sky?"), _m("assistant", "Blue.")])
    assert to_example(long, 1, "job")["tokens"] == tokens


def test_preference_scores_and_language_come_from_their_fields() -> None:
    row = {
        "prompt": "Sky?",
        "chosen": "Blue.",
        "rejected": "Green.",
        "score_chosen": 9,
        "score_rejected": 2.5,
        "lang": "en",
    }

    example = to_example(row, 1, "job")

    assert example["score_chosen"] == 9.0
    assert example["score_rejected"] == 2.5
    assert example["language"] == "en"
    assert example["metadata"] == {}


def test_a_non_numeric_score_stays_in_the_metadata() -> None:
    row = {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green.", "score_chosen": "high"}

    example = to_example(row, 1, "job")

    assert "score_chosen" not in example
    assert example["metadata"] == {"score_chosen": "high"}


# ---- metadata ----


def test_metadata_keeps_the_other_fields_and_the_rows_id_as_source_id() -> None:
    row = {
        **_sft(),
        "id": "abc-1",
        "source": "forum",
        "tags": ["math", "easy"],
        "extra": {"votes": 3},
        "ignored": None,
        "language": "de",
    }

    example = to_example(row, 42, "job7")

    assert example["id"] == "job7/r0000042"
    assert example["row"] == 42
    assert example["language"] == "de"
    assert example["metadata"] == {
        "source_id": "abc-1",
        "source": "forum",
        "tags": ["math", "easy"],
        "extra": {"votes": 3},
    }


def test_a_row_with_both_id_and_source_id_keeps_both() -> None:
    example = to_example({**_sft(), "id": 1, "source_id": "s"}, 1, "job")

    assert example["metadata"] == {"id": 1, "source_id": "s"}


def test_parquet_values_become_plain_json_in_the_metadata(tmp_path: Path) -> None:
    table = pa.table(
        {
            "messages": [[_m("user", "Hi"), _m("assistant", "Hello")]],
            "id": pa.array([7], pa.int64()),
            "created": pa.array([dt.datetime(2024, 5, 1, 12, 30)], pa.timestamp("us")),
            "day": pa.array([dt.date(2024, 5, 1)], pa.date32()),
            "price": pa.array([decimal.Decimal("1.25")], pa.decimal128(5, 2)),
            "blob": pa.array([b"\xff\x00"], pa.binary()),
            "note": pa.array([b"plain"], pa.binary()),
            "counts": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int32())),
            "ratio": pa.array([float("nan")], pa.float64()),
        }
    )
    path = tmp_path / "typed.parquet"
    pq.write_table(table, path)

    example = _one(path)

    assert example["metadata"] == {
        "source_id": 7,
        "created": "2024-05-01T12:30:00",
        "day": "2024-05-01",
        "price": 1.25,
        "blob": "/wA=",
        "note": "plain",
        "counts": [["a", 1]],
        "ratio": None,
    }
    json.dumps(example, allow_nan=False)


def test_a_lone_surrogate_in_metadata_is_replaced_so_the_example_encodes() -> None:
    row = json.loads(
        '{"messages": [{"role": "user", "content": "Hi"}, '
        '{"role": "assistant", "content": "Yo"}], "note": "a\\ud800b"}'
    )

    example = to_example(row, 1, "job")

    assert example["metadata"] == {"note": "a\ufffdb"}
    json.dumps(example, ensure_ascii=False).encode("utf-8")


# ---- auto and forced shapes ----


ALPACA = {"instruction": "Say hi.", "output": "Hi!"}
SHAREGPT = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
PREFERENCE = {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}


def test_auto_shape_reads_each_row_of_a_mixed_file_by_its_keys(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", [_sft(), ALPACA, SHAREGPT, PREFERENCE])

    examples = _examples(path)

    assert [e["shape"] for e in examples] == ["messages", "alpaca", "sharegpt", "preference"]
    assert [e["row"] for e in examples] == [1, 2, 3, 4]


def test_a_forced_shape_makes_rows_of_other_shapes_malformed(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", [_sft(), ALPACA, SHAREGPT, PREFERENCE])

    rows = _read(path, shape="alpaca")

    assert [isinstance(r, MalformedRow) for r in rows] == [True, False, True, True]
    assert rows[0] == MalformedRow(
        1,
        "the row is not in the alpaca shape: expected 'instruction' and 'output'; "
        "found keys 'messages'",
    )
    assert isinstance(rows[3], MalformedRow)
    assert rows[3].row == 4
    assert "found keys 'prompt', 'chosen', 'rejected'" in rows[3].reason


def test_a_forced_preference_shape_reads_a_row_that_also_has_messages() -> None:
    row = {**PREFERENCE, "messages": [_m("user", "x")]}

    example = to_example(row, 1, "job", "preference")

    assert example["shape"] == "preference"
    assert example["metadata"] == {"messages": [{"role": "user", "content": "x"}]}


def test_null_columns_of_a_parquet_file_count_as_absent(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {
            "messages": [_m("user", "Hi"), _m("assistant", "Yo")],
            "instruction": None,
            "output": None,
        },
        {"messages": None, "instruction": "Say hi.", "output": "Hi!"},
    ]
    path = _write_parquet(tmp_path / "mixed.parquet", rows)

    examples = _examples(path)

    assert [e["shape"] for e in examples] == ["messages", "alpaca"]
    assert [e["metadata"] for e in examples] == [{}, {}]


def test_an_unknown_shape_name_is_refused_before_reading(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "rows.jsonl", [_sft()])

    with pytest.raises(ValueError, match="unknown shape 'chatml'"):
        read_examples(path, "jsonl", "chatml", "job")


# ---- malformed rows ----


def test_every_line_is_reported_in_order_and_good_rows_still_import(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "rows.jsonl",
        [
            _sft("one"),
            '{"messages": [',
            "",
            '"just text"',
            {"text": "hello", "label": 1},
            {"messages": [_m("user", "Hi"), _m("assistant", "Yo"), _m("user", "And?")]},
            "   ",
            {"instruction": "Say hi.", "output": " "},
            {"messages": [_m("user", "Hi"), _m("tool", "{}"), _m("assistant", "Yo")]},
            {
                "messages": [
                    _m("user", [{"type": "image_url", "image_url": {}}]),
                    _m("assistant", "A"),
                ]
            },
            {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Blue."},
            _sft("last"),
        ],
    )

    rows = _read(path)

    assert [r.row if isinstance(r, MalformedRow) else r["row"] for r in rows] == [
        1, 2, 4, 5, 6, 8, 9, 10, 11, 12,
    ]  # fmt: skip
    reasons = [r.reason for r in rows if isinstance(r, MalformedRow)]
    assert reasons[0].startswith("invalid JSON at column 15: ")
    assert reasons[1:] == [
        "the row is text, not a JSON object",
        "the row is in no known shape: found keys 'text', 'label'; expected 'messages' "
        "(messages), 'conversations' (sharegpt), 'instruction' + 'output' (alpaca), 'prompt' "
        "+ 'chosen' + 'rejected', 'chosen' + 'rejected' or 'input' + 'preferred_output' + "
        "'non_preferred_output' (preference)",
        "'messages' ends with a user turn; the last turn must be the assistant's reply",
        "'output' is empty; it is the reply that is taught",
        "messages[1].role is 'tool'; only 'system', 'user' and 'assistant' turns are supported",
        "messages[0].content[0] is a part of type 'image_url'; only text parts are supported",
        "chosen and rejected are the same reply",
    ]
    first, last = rows[0], rows[-1]
    assert not isinstance(first, MalformedRow)
    assert not isinstance(last, MalformedRow)
    assert (first["query"], last["query"]) == ("one", "last")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            {"messages": [_m("user", "Hi"), _m("assistant", "Yo"), _m("assistant", 3)]},
            "messages[2].content is a number, not text",
        ),
        ({"messages": "Hi"}, "'messages' is text, not a list of turns"),
        ({"messages": []}, "'messages' is empty"),
        ({"messages": [_m("system", "S"), _m("assistant", "Yo")]}, "'messages' has no user turn"),
        (
            {"messages": [_m("user", "Hi"), _m("assistant", " \n\t")]},
            "the assistant's reply (messages[1]) is empty",
        ),
        (
            {"messages": [_m("user", ""), _m("assistant", "Yo")]},
            "messages[0] (user) is empty",
        ),
        (
            {"messages": [_m("user", "Hi"), {"role": "assistant"}]},
            "messages[1] has no 'content'",
        ),
        (
            {"messages": [_m("user", "Hi"), "Yo"]},
            "messages[1] is text, not a turn with a role and content",
        ),
        (
            {
                "messages": [
                    _m("user", "Hi"),
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
                    _m("assistant", "Yo"),
                ]
            },
            "messages[1] is a tool call; only text turns are supported",
        ),
        (
            {"messages": [_m("user", [{"type": "text", "text": 5}]), _m("assistant", "Yo")]},
            "messages[0].content[0].text is a number, not text",
        ),
        (
            {"conversations": [{"from": "gpt", "value": "Yo"}, {"from": "human", "value": "Hi"}]},
            "'conversations' ends with a user turn; the last turn must be the assistant's reply",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "function_call", "value": "{}"},
                    {"from": "gpt", "value": "Yo"},
                ]
            },
            "conversations[1].from is 'function_call'; only 'human' (or 'user'), 'gpt' (or "
            "'assistant') and 'system' turns are supported",
        ),
        ({"instruction": " ", "output": "Hi"}, "'instruction' is empty"),
        ({"instruction": "Hi", "input": 3, "output": "Yo"}, "'input' is a number, not text"),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, "'prompt' is empty"),
        (
            {"prompt": "Sky?", "chosen": 1, "rejected": "b"},
            "'chosen' is a number, not text or a list of messages",
        ),
        (
            {"prompt": "Sky?", "chosen": [_m("user", "a")], "rejected": "b"},
            "'chosen' ends with a user turn; the last turn must be the assistant's reply",
        ),
        (
            {"prompt": [_m("system", "S")], "chosen": "a", "rejected": "b"},
            "'prompt' has no user turn",
        ),
        (
            {
                "prompt": [_m("user", "Sky?")],
                "chosen": [_m("assistant", "Blue. ")],
                "rejected": [_m("assistant", "Blue.")],
            },
            "chosen and rejected are the same reply",
        ),
        (
            {"chosen": "Q: sky? A: blue", "rejected": "Q: sky? A: green"},
            "'chosen' and 'rejected' are text with no 'prompt': add the 'prompt' field, or give "
            "'chosen' and 'rejected' as whole conversations (lists of messages)",
        ),
        (
            {
                "chosen": [_m("user", "Sky?"), _m("assistant", "Blue.")],
                "rejected": [_m("user", "Sky?"), _m("assistant", "Blue.")],
            },
            "chosen and rejected are the same reply",
        ),
        (
            {
                "chosen": [_m("user", "Sky?"), _m("assistant", "Blue.")],
                "rejected": [_m("user", "Colour?"), _m("assistant", "Green.")],
            },
            "'chosen' and 'rejected' share no prompt turns: with no 'prompt' field they must be "
            "whole conversations that start with the same prompt",
        ),
        (
            {
                "chosen": [_m("user", "Sky?"), _m("assistant", "Blue.")],
                "rejected": [_m("user", "Sky?")],
            },
            "'rejected' has no reply after the prompt the two share",
        ),
        (
            {
                "chosen": [_m("user", "Sky?"), _m("assistant", "Blue."), _m("user", "Why?")],
                "rejected": [_m("user", "Sky?"), _m("assistant", "Green.")],
            },
            "'chosen' ends with a user turn; the last turn must be the assistant's reply",
        ),
        (
            {
                "input": {"messages": [_m("user", "Sky?")]},
                "preferred_output": [_m("assistant", "Blue.")],
            },
            "'non_preferred_output' is missing: it holds the rejected reply",
        ),
        (
            {"input": "Sky?", "preferred_output": "a", "non_preferred_output": "b"},
            "'input' is text, not an object with 'messages'",
        ),
    ],
)
def test_to_example_says_specifically_why_a_row_is_malformed(
    row: dict[str, Any], reason: str
) -> None:
    assert _reason(row) == reason


def test_a_content_with_a_lone_surrogate_is_malformed() -> None:
    row = json.loads(
        '{"messages": [{"role": "user", "content": "a\\udc00"}, '
        '{"role": "assistant", "content": "b"}]}'
    )

    assert (
        _reason(row) == "messages[0].content is not valid Unicode (a lone surrogate at character 1)"
    )


def test_invalid_utf8_on_a_line_is_malformed_and_the_next_lines_import(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    good = json.dumps(_sft()).encode()
    path.write_bytes(good + b"\n" + b'{"messages": "\xff\xfe"}\n' + good + b"\n")

    rows = _read(path)

    assert rows[1] == MalformedRow(2, "the line is not valid UTF-8 (bad byte at offset 14)")
    assert [r["row"] for r in rows if not isinstance(r, MalformedRow)] == [1, 3]


def test_a_line_with_an_integer_too_long_to_read_is_malformed(tmp_path: Path) -> None:
    line = json.dumps(_sft())[:-1] + ', "n": ' + "9" * 5000 + "}"
    path = _write_jsonl(tmp_path / "rows.jsonl", [_sft(), line, _sft()])

    rows = _read(path)

    assert isinstance(rows[1], MalformedRow)
    assert rows[1].row == 2
    assert rows[1].reason.startswith("invalid JSON: Exceeds the limit")
    assert not isinstance(rows[2], MalformedRow)


def test_blank_lines_count_as_lines_but_are_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    line = json.dumps(_sft())
    path.write_text(f"\n{line}\r\n\n  \t\n{line}\n\n", encoding="utf-8")

    examples = _examples(path)

    assert [e["row"] for e in examples] == [2, 5]
    assert [e["item_id"] for e in examples] == ["r0000002", "r0000005"]


def test_a_utf8_bom_before_the_first_row_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_sft()).encode() + b"\n")

    assert _one(path)["response"] == "4."


def test_parquet_malformed_rows_are_numbered_across_batches(tmp_path: Path) -> None:
    rows = [_sft(f"q{n}") for n in range(PARQUET_BATCH_ROWS + 100)]
    bad_row = PARQUET_BATCH_ROWS + 37
    rows[bad_row - 1] = {"messages": [_m("user", "Hi"), _m("user", "Anyone?")]}
    path = _write_parquet(tmp_path / "rows.parquet", rows)

    result = _read(path)

    assert len(result) == len(rows)
    bad = [r for r in result if isinstance(r, MalformedRow)]
    assert bad == [
        MalformedRow(
            bad_row, "'messages' ends with a user turn; the last turn must be the assistant's reply"
        )
    ]
    last = result[-1]
    assert not isinstance(last, MalformedRow)
    assert (last["row"], last["query"]) == (len(rows), f"q{len(rows) - 1}")


# ---- files ----


def test_a_gzipped_json_lines_file_is_decompressed_as_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(_sft("one")) + "\n\n" + "not json\n" + json.dumps(_sft("two")) + "\n")

    rows = _read(path)

    assert sniff_format(path) == "jsonl"
    assert [r.row if isinstance(r, MalformedRow) else r["row"] for r in rows] == [1, 3, 4]
    assert isinstance(rows[1], MalformedRow)


def test_a_gzipped_file_is_recognized_by_its_magic_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(gzip.compress(json.dumps(_sft()).encode() + b"\n"))

    assert sniff_format(path) == "jsonl"
    assert _one(path)["query"] == "What is 2+2?"


def test_a_truncated_gzip_file_raises_after_the_rows_it_could_read(tmp_path: Path) -> None:
    data = gzip.compress((json.dumps(_sft()) + "\n").encode() * 2000)
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])

    rows = read_examples(path, "jsonl", "auto", "job")

    assert not isinstance(next(rows), MalformedRow)
    with pytest.raises(ImportFileError, match="cannot be read after line"):
        list(rows)


def test_a_json_array_file_raises_an_error_saying_how_to_convert_it(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_sft(), _sft()], indent=2), encoding="utf-8")

    with pytest.raises(ImportFileError, match=r"JSON array.*jq -c '\.\[\]' data\.json"):
        sniff_format(path)
    with pytest.raises(ImportFileError, match="JSON array"):
        list(read_examples(path, "jsonl", "auto", "job"))


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_a_json_lines_file_with_no_rows_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)

    with pytest.raises(ImportFileError, match="has no rows"):
        list(read_examples(path, "jsonl", "auto", "job"))


def test_an_empty_file_cannot_be_detected() -> None:
    with pytest.raises(ImportFileError, match="is empty"):
        detect_format("rows.jsonl", b"")


def test_a_parquet_file_with_no_rows_raises(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"messages": pa.array([], pa.list_(pa.string()))}), path)

    with pytest.raises(ImportFileError, match="has no rows"):
        list(read_examples(path, "parquet", "auto", "job"))


def test_a_file_that_is_not_parquet_raises_when_read_as_parquet(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "rows.parquet", [_sft()])

    with pytest.raises(ImportFileError, match="not a readable Parquet file"):
        list(read_examples(path, "parquet", "auto", "job"))


def test_a_missing_file_raises_at_once(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="does not exist"):
        read_examples(tmp_path / "nope.jsonl", "jsonl", "auto", "job")


def test_a_text_file_that_is_not_json_lines_raises(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("instruction,output\nSay hi,Hi\n", encoding="utf-8")

    with pytest.raises(ImportFileError, match="not JSON Lines: it starts with 'i'"):
        list(read_examples(path, "jsonl", "auto", "job"))


# ---- detect_format ----


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("data.jsonl", "jsonl"),
        ("DATA.NDJSON", "jsonl"),
        ("data.json", "jsonl"),
        ("data.jsonl.gz", "jsonl"),
        ("data.json.gz", "jsonl"),
        ("data.parquet", "parquet"),
    ],
)
def test_detect_format_goes_by_the_name_suffix(name: str, fmt: str) -> None:
    head = b"PAR1\x15\x04" if fmt == "parquet" else b'{"messages": []}\n'
    if name.endswith(".gz"):
        head = gzip.compress(head)

    assert detect_format(name, head) == fmt


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"PAR1\x15\x04\x15", "parquet"),
        (gzip.compress(b'{"a": 1}\n'), "jsonl"),
        (gzip.compress(b'{"a": 1}\n')[:4], "jsonl"),
        (b'  \n{"messages": []}\n', "jsonl"),
        (b'\xef\xbb\xbf{"messages": []}\n', "jsonl"),
    ],
)
def test_detect_format_goes_by_content_when_the_name_says_nothing(head: bytes, fmt: str) -> None:
    assert detect_format("upload", head) == fmt


@pytest.mark.parametrize(
    ("name", "head", "message"),
    [
        ("upload", b'[{"a": 1}]', "JSON array"),
        ("data.json", b'\n [\n  {"a": 1}\n]', r"jq -c '\.\[\]' data\.json > data\.jsonl"),
        ("upload", gzip.compress(b'[{"a": 1}]'), "JSON array"),
        ("data.json", b'{\n  "messages": []\n}\n', r"several lines.*jq -c \. data\.json"),
        ("data.csv", b"instruction,output\n", "cannot tell the format of 'data.csv'"),
        ("data.parquet", b'{"a": 1}\n', "named as Parquet but is not a Parquet file"),
        ("data.jsonl", b"PAR1\x15\x04", "rename it to end in .parquet"),
        ("data.jsonl", b"\x1f\x8b\x08\x00garbage-garbage", "not valid gzip"),
    ],
)
def test_detect_format_refuses_what_it_cannot_import_and_says_why(
    name: str, head: bytes, message: str
) -> None:
    with pytest.raises(ImportFileError, match=message):
        detect_format(name, head)


# ---- streaming ----


def test_read_examples_yields_the_first_row_without_reading_the_whole_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.jsonl"
    first_line = json.dumps(_sft("first", "reply")) + "\n"
    line = json.dumps(_sft("same question", "same answer")) + "\n"
    path.write_text(first_line + line * 199_999, encoding="utf-8")
    rows = read_examples(path, "jsonl", "auto", "job")

    first = next(rows)
    # Cut the file to its first line: a reader that had loaded it all would still see 200k rows.
    os.truncate(path, len(first_line))
    rest = list(rows)

    assert not isinstance(first, MalformedRow)
    assert (first["row"], first["query"], first["response"]) == (1, "first", "reply")
    assert len(rest) < 1000


def test_parquet_rows_are_read_one_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [_sft(f"q{n}") for n in range(PARQUET_BATCH_ROWS * 4)]
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=PARQUET_BATCH_ROWS * 2)
    pulled: list[int] = []
    original = pq.ParquetFile.iter_batches

    def counting(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for batch in original(self, *args, **kwargs):
            pulled.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    stream = read_examples(path, "parquet", "auto", "job")

    first = next(stream)

    assert not isinstance(first, MalformedRow)
    assert first["query"] == "q0"
    assert pulled == [PARQUET_BATCH_ROWS]
    assert sum(1 for _ in stream) == len(rows) - 1
    assert pulled == [PARQUET_BATCH_ROWS] * 4


# ---- limits: hostile files ----


def _gzip_bomb(path: Path, zeros: int, before: bytes = b"", after: bytes = b"") -> Path:
    """``before``, then ``zeros`` zero bytes on one line, then ``after``, gzipped at level 9:
    about 1 KiB per MiB of zeros."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(before)
        block = b"\0" * (1 << 20)
        for _ in range(zeros >> 20):
            f.write(block)
        f.write(b"\n" + after)
    return path


def _traced_peak(read: Any) -> tuple[Any, int]:
    """What ``read()`` returns (or raises) and the most Python memory it held at once."""
    tracemalloc.start()
    try:
        result: Any = read()
    except Exception as e:
        result = e
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, peak


def test_a_gzip_bomb_behind_a_valid_row_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    # 256 MiB of zeros in a ~260 KiB file: far past 100 times its size.
    path = _gzip_bomb(
        tmp_path / "rows.jsonl.gz", 256 << 20, before=json.dumps(_sft()).encode() + b"\n"
    )
    assert path.stat().st_size < 1 << 20
    rows = read_examples(path, "jsonl", "auto", "job")

    first = next(rows)
    error, peak = _traced_peak(lambda: list(rows))

    assert not isinstance(first, MalformedRow) and first["query"] == "What is 2+2?"
    assert isinstance(error, ImportFileError)
    assert "unpacks to more than 64 MiB" in str(error)
    assert "TAXOFORGE_IMPORT_MAX_COMPRESSION_RATIO" in str(error)
    # Read a bounded piece at a time, never as one 256 MiB line.
    assert peak < 4 << 20


def test_the_decompressed_limit_counts_unpacked_bytes_whatever_the_ratio(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    _write_jsonl(path, [_sft(f"question {n}") for n in range(50)])
    limits = ImportLimits(max_decompressed_bytes=1000)

    with pytest.raises(ImportFileError, match="TAXOFORGE_IMPORT_MAX_DECOMPRESSED_BYTES"):
        list(read_examples(path, "jsonl", "auto", "job", limits))


def test_a_gzip_within_the_ratio_reads_past_the_floor(tmp_path: Path) -> None:
    # 8 MiB of zeros on one line is over the record limit but no bomb (under the 64 MiB floor).
    row = json.dumps(_sft()).encode()
    path = _gzip_bomb(tmp_path / "rows.jsonl.gz", 8 << 20, before=row + b"\n", after=row)

    rows = _read(path)

    assert [type(r) for r in rows] == [dict, TooLargeRow, dict]
    assert [r.row if isinstance(r, MalformedRow) else r["row"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_row_over_the_record_limit_is_dropped_with_its_row_and_its_neighbours_import(
    tmp_path: Path, gzipped: bool
) -> None:
    big = json.dumps(_sft("x" * (20 << 20)))  # 20 MiB
    lines = [json.dumps(_sft("one")), "", big, json.dumps(_sft("three")), "{not json"]
    data = "".join(f"{line}\n" for line in lines).encode()
    path = tmp_path / ("rows.jsonl.gz" if gzipped else "rows.jsonl")
    path.write_bytes(gzip.compress(data, compresslevel=1) if gzipped else data)
    del data, big

    rows, peak = _traced_peak(lambda: _read(path))

    assert [r.row if isinstance(r, MalformedRow) else r["row"] for r in rows] == [1, 3, 4, 5]
    too_large = rows[1]
    assert isinstance(too_large, TooLargeRow)
    assert too_large.size == len(json.dumps(_sft("x" * (20 << 20))))
    assert "is 20.0 MiB, over the 256 KiB limit of one record" in too_large.reason
    assert "TAXOFORGE_IMPORT_MAX_RECORD_BYTES" in too_large.reason
    assert [r["query"] for r in rows if not isinstance(r, MalformedRow)] == ["one", "three"]
    assert type(rows[3]) is MalformedRow  # a broken line is still malformed, not too large
    assert peak < 4 << 20  # the 20 MiB line was never held whole


def test_the_record_limit_counts_the_line_without_its_newline(tmp_path: Path) -> None:
    at_limit = json.dumps(_sft("q", "a"))
    limits = ImportLimits(max_record_bytes=len(at_limit))
    over = json.dumps(_sft("q", "ab"))
    path = tmp_path / "rows.jsonl"
    # CRLF line ends, and a last line without one.
    path.write_bytes(f"{at_limit}\r\n{over}\r\n{at_limit}\r\n{over}".encode())

    rows = list(read_examples(path, "jsonl", "auto", "job", limits))

    assert [type(r) for r in rows] == [dict, TooLargeRow, dict, TooLargeRow]
    assert [r.size for r in rows if isinstance(r, TooLargeRow)] == [len(over)] * 2


def test_the_record_limit_must_leave_two_records_within_a_nats_message() -> None:
    with pytest.raises(ValueError, match="two records in one NATS message"):
        ImportLimits(max_record_bytes=MAX_RECORD_BYTES_CEILING + 1)
    assert 2 * MAX_RECORD_BYTES_CEILING + (32 << 10) <= 1 << 20


def test_a_reason_quoting_a_huge_key_is_cut_short(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "rows.jsonl", [{"k" * 100_000: 1}, _sft()])

    rows = _read(path)

    assert isinstance(rows[0], MalformedRow)
    assert rows[0].reason.startswith("the row is in no known shape: found keys 'kkk")
    assert len(rows[0].reason) <= 300
    assert rows[0].reason.endswith("characters)")


def test_a_parquet_row_over_the_record_limit_is_dropped_before_it_becomes_python(
    tmp_path: Path,
) -> None:
    rows = [_sft(f"q{n}") for n in range(PARQUET_BATCH_ROWS * 2)]
    big_row = PARQUET_BATCH_ROWS + 5
    rows[big_row - 1] = _sft("x" * (5 << 20))
    path = _write_parquet(tmp_path / "rows.parquet", rows)
    del rows

    result, peak = _traced_peak(lambda: _read(path))

    assert len(result) == PARQUET_BATCH_ROWS * 2
    (too_large,) = [r for r in result if isinstance(r, MalformedRow)]
    assert isinstance(too_large, TooLargeRow) and too_large.row == big_row
    assert "the row is 5.0 MiB" in too_large.reason
    assert result[big_row]["query"] == f"q{big_row}"
    # Python memory (tracemalloc does not see Arrow's): the 5 MiB text never became a str.
    assert peak < 2 << 20


def test_a_parquet_bomb_is_refused_from_its_page_headers(tmp_path: Path) -> None:
    rows = [{"instruction": "Say hi", "output": "Hi"}] * 3
    rows[1] = {"instruction": "Say hi", "output": "\0" * (128 << 20)}
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd", use_dictionary=False)
    assert path.stat().st_size < 1 << 20

    with pytest.raises(ImportFileError, match="unpacks to more than 64 MiB"):
        _read(path)


def test_a_parquet_page_over_the_page_limit_is_refused_saying_how_to_rewrite_it(
    tmp_path: Path,
) -> None:
    rows = [_sft(os.urandom(1000).hex()) for _ in range(200)]  # ~400 KiB incompressible page
    path = _write_parquet(tmp_path / "rows.parquet", rows)
    limits = ImportLimits(max_page_bytes=100_000)

    with pytest.raises(ImportFileError, match=r"over the 97.7 KiB limit.*write_batch_size"):
        list(read_examples(path, "parquet", "auto", "job", limits))
    assert len(list(read_examples(path, "parquet", "auto", "job"))) == 200
