"""Dropped items: every line of dropped.jsonl says which item, at which stage, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.selector.decontam import Deduplicator
from services.selector.dropped import Dropped, drop_record, import_row, iter_drops, stage_of
from services.selector.imports import MalformedRow, to_example
from services.selector.screening import screen


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("reason", "row", "stage"),
    [
        ("malformed", True, "import"),
        ("duplicate", False, "dedup"),
        ("near_duplicate", False, "dedup"),
        ("contaminated", False, "decontaminate"),
        ("not_selected", False, "select"),
        ("something_new", True, "import"),  # a row that never became an example
        ("something_new", False, "prepare"),
    ],
)
def test_a_drop_without_a_stage_gets_the_stage_of_its_reason(
    reason: str, row: bool, stage: str
) -> None:
    assert stage_of(reason, row) == stage
    # An imported row's id names its row; a generated item's does not.
    assert drop_record("j-1", "r0000004" if row else "i0000004", reason)["stage"] == stage


def test_an_imported_rows_drop_names_its_row() -> None:
    assert import_row("r0000042") == 42 and import_row("r12345678") == 12345678
    assert import_row("i0000042") is None and import_row("r42x") is None
    assert drop_record("j-1", "r0000042", "duplicate")["row"] == 42
    assert "row" not in drop_record("j-1", "i0000042", "failed", "judge")


def test_a_drop_record_names_the_item_in_the_job() -> None:
    record = drop_record("j-1", "i0000002", "failed", "respond", detail="HTTP 500")
    assert record == {
        "id": "j-1/i0000002",
        "item_id": "i0000002",
        "stage": "respond",
        "reason": "failed",
        "detail": "HTTP 500",
    }


def test_a_dropped_item_survives_the_work_file() -> None:
    dropped = Dropped("i0000003", "judge", "unusable", "gap 1.0", {"rubric_rounds": 4})
    again = Dropped.from_json(json.loads(json.dumps(dropped.to_json())))
    assert again == dropped
    assert again.record("j-1") == {
        "id": "j-1/i0000003",
        "item_id": "i0000003",
        "stage": "judge",
        "reason": "unusable",
        "rubric_rounds": 4,
        "detail": "gap 1.0",
    }


def test_lines_from_before_stages_are_read_with_one(tmp_path: Path) -> None:
    path = tmp_path / "dropped.jsonl"
    path.write_text(
        '{"id": "j-1/r0000002", "item_id": "r0000002", "reason": "malformed", "row": 2}\n'
        "\n"
        '{"item_id": "r0000005", "reason": "duplicate", "detail": "of r0000001"}\n'
    )
    assert [(d["id"], d["row"], d["stage"], d["reason"]) for d in iter_drops(path, "j-1")] == [
        ("j-1/r0000002", 2, "import", "malformed"),
        ("j-1/r0000005", 5, "dedup", "duplicate"),
    ]


def test_prepare_lists_every_item_it_does_not_keep_with_its_stage(tmp_path: Path) -> None:
    def row(n: int, query: str) -> Any:
        value = {
            "messages": [{"role": "user", "content": query}, {"role": "assistant", "content": "A."}]
        }
        return to_example(value, n, "j-1")

    items = [
        row(1, "How do tides work along the Atlantic coast?"),
        MalformedRow(2, "invalid JSON at column 1"),
        row(3, "how do TIDES work along the Atlantic coast"),
        Dropped("i0000009", "instruct", "failed", "HTTP 500", {"deliveries": 3}),
        row(4, "Which spices go well with roasted carrots?"),
    ]
    out, dropped = tmp_path / "examples.jsonl", tmp_path / "dropped.jsonl"
    tally = screen(items, "j-1", Deduplicator(0.8), None, out, dropped)

    assert tally.kept == 2 and [e["item_id"] for e in _lines(out)] == ["r0000001", "r0000004"]
    assert [(d["id"], d["item_id"], d["stage"], d["reason"]) for d in _lines(dropped)] == [
        ("j-1/r0000002", "r0000002", "import", "malformed"),
        ("j-1/r0000003", "r0000003", "dedup", "duplicate"),
        ("j-1/i0000009", "i0000009", "instruct", "failed"),
    ]
    assert [d.get("row") for d in _lines(dropped)] == [2, 3, None]
    assert _lines(dropped)[2]["deliveries"] == 3
