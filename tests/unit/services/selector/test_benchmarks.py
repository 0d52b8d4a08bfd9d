"""Benchmark files in the shapes benchmarks ship in are read, and one that yields no prompt is
refused with a reason naming the keys it found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.selector.benchmarks import benchmark_prompts, scan_benchmark
from services.selector.imports import ImportLimits


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_mt_bench_turns_give_every_turn_as_a_prompt(tmp_path: Path) -> None:
    rows = [
        {
            "question_id": 81,
            "category": "writing",
            "turns": [
                "Compose an engaging travel blog post about a recent trip to Hawaii.",
                "Rewrite your previous response. Start every sentence with the letter A.",
            ],
        },
        {"question_id": 82, "category": "math", "turns": ["What is 3 + 4 times 2?"]},
    ]
    path = _jsonl(tmp_path / "question.jsonl", rows)

    assert list(benchmark_prompts(path)) == [
        "Compose an engaging travel blog post about a recent trip to Hawaii.",
        "Rewrite your previous response. Start every sentence with the letter A.",
        "What is 3 + 4 times 2?",
    ]
    scan = scan_benchmark(path)
    assert scan.prompts == 3 and scan.refusal() is None


@pytest.mark.parametrize(
    ("row", "prompt"),
    [
        ({"prompt": "Name three rivers."}, "Name three rivers."),
        ({"question": "Who wrote Hamlet?", "answer": "Shakespeare"}, "Who wrote Hamlet?"),
        ({"problem": "Solve x + 1 = 2.", "solution": "1"}, "Solve x + 1 = 2."),
        (
            {"instruction": "Summarize the text.", "input": "The cat sat.", "output": "A cat."},
            "Summarize the text.\n\nThe cat sat.",
        ),
        ({"instruction": "Say hi.", "input": "", "output": "hi"}, "Say hi."),
        ("A bare JSON string is the prompt.", "A bare JSON string is the prompt."),
    ],
)
def test_one_prompt_field_per_row_is_read(tmp_path: Path, row: Any, prompt: str) -> None:
    path = _jsonl(tmp_path / "bench.jsonl", [row])
    assert list(benchmark_prompts(path)) == [prompt]


def test_conversations_give_their_user_turns(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "First question?"},
                {"role": "assistant", "content": "An answer."},
                {"role": "user", "content": "Follow-up question?"},
            ]
        },
        {
            "conversations": [
                {"from": "human", "value": "ShareGPT asks"},
                {"from": "gpt", "value": "x"},
            ]
        },
    ]
    path = _jsonl(tmp_path / "chat.jsonl", rows)

    assert list(benchmark_prompts(path)) == [
        "First question?",
        "Follow-up question?",
        "ShareGPT asks",
    ]


def test_plain_text_lines_json_arrays_and_parquet_are_read(tmp_path: Path) -> None:
    text = tmp_path / "prompts.txt"
    text.write_text("What is a stack?\n\n  What is a queue?  \n", encoding="utf-8")
    assert list(benchmark_prompts(text)) == ["What is a stack?", "What is a queue?"]

    array = tmp_path / "eval.json"
    array.write_text(json.dumps([{"instruction": "Tell a joke."}, {"turns": ["Hi?", "Bye?"]}]))
    assert list(benchmark_prompts(array)) == ["Tell a joke.", "Hi?", "Bye?"]

    parquet = tmp_path / "bench.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "Parquet prompt?", "id": 1}]), parquet)
    assert list(benchmark_prompts(parquet)) == ["Parquet prompt?"]


def test_a_file_with_no_prompt_is_refused_naming_the_keys_it_found(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "odd.jsonl", [{"qid": 1, "body": "x"}, {"qid": 2, "body": "y"}])

    assert list(benchmark_prompts(path)) == []
    scan = scan_benchmark(path)
    refusal = scan.refusal()
    assert scan.prompts == 0 and refusal is not None
    assert "'qid'" in refusal and "'body'" in refusal
    assert "turns" in refusal and "instruction" in refusal


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b'{"turns": []}\n{"prompt": "   "}\n', "no prompt"),
        (b"[1, 2", "JSON array"),
        (b"\x00\x01\x02binary", "binary"),
    ],
)
def test_files_that_yield_nothing_are_refused_with_a_reason(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "bench"
    path.write_bytes(content)

    refusal = scan_benchmark(path).refusal()
    assert refusal is not None and why in refusal


def test_rows_over_the_record_limit_are_skipped_not_read(tmp_path: Path) -> None:
    limits = ImportLimits(max_record_bytes=64)
    path = _jsonl(tmp_path / "b.jsonl", [{"prompt": "x" * 200}, {"prompt": "short one"}])

    scan = scan_benchmark(path, limits)
    assert scan.prompts == 1 and scan.malformed == 1
    assert list(benchmark_prompts(path, limits)) == ["short one"]
