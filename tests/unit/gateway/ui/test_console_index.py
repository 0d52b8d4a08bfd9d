"""The console's records index: filters, paging, a record's provenance and texts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.ui.index import RecordFilter, RecordIndex, build_index


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def index(tmp_path: Path) -> RecordIndex:
    kept = [
        {
            "id": f"j-1/i{n}",
            "item_id": f"i{n}",
            "shape": "generated",
            "kept": "tacos: top of its cluster",
            "judge_score": 50.0 + n,
            "cluster": n % 2,
            "cluster_label": f"c{n % 2}",
            "language": "en" if n % 3 else "fr",
            "node": "math" if n < 5 else "art",
            "difficulty": "easy",
            "metadata": {"verdicts": {"mode": "pairwise", "scores": []}},
        }
        for n in range(10)
    ]
    dropped = [
        {"id": "j-1/d1", "item_id": "d1", "stage": "dedup", "reason": "duplicate"},
        {"id": "j-1/d2", "item_id": "d2", "stage": "judge", "reason": "unusable", "detail": "x"},
        # A discarded draft of a kept item: shown on that item, never as a record.
        {"id": "j-1/i1", "item_id": "i1", "candidate": "c1", "stage": "gate", "reason": "echo"},
    ]
    sft = [
        {"id": f"j-1/i{n}", "messages": [{"role": "user", "content": f"question {n}"}]}
        for n in range(10)
    ]
    preference = [
        {
            "id": "j-1/i3",
            "prompt": [{"role": "user", "content": "question 3"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "score_chosen": 9.0,
            "score_rejected": 4.5,
        }
    ]
    dest = tmp_path / "j-1.sqlite"
    build_index(
        dest,
        _write(tmp_path / "p.jsonl", kept),
        _write(tmp_path / "d.jsonl", dropped),
        _write(tmp_path / "s.jsonl", sft),
        _write(tmp_path / "pref.jsonl", preference),
    )
    return RecordIndex(dest)


def test_pages_in_export_order_with_the_total(index: RecordIndex) -> None:
    first = index.page(RecordFilter(), page=1, per_page=5)
    second = index.page(RecordFilter(), page=3, per_page=5)
    assert first.total == 12 and first.pages == 3
    assert [r["item_id"] for r in first.rows] == ["i0", "i1", "i2", "i3", "i4"]
    assert [r["item_id"] for r in second.rows] == ["d1", "d2"]
    assert first.rows[1]["preview"] == "question 1"


def test_filters_combine(index: RecordIndex) -> None:
    fr_math = index.page(RecordFilter(node="math", language="fr"))
    assert [r["item_id"] for r in fr_math.rows] == ["i0", "i3"]
    scored = index.page(RecordFilter(score_min=55, score_max=57.5, cluster="c1"))
    assert [r["item_id"] for r in scored.rows] == ["i5", "i7"]
    duplicates = index.page(RecordFilter(status="dropped", reason="duplicate"))
    assert [(r["item_id"], r["stage"]) for r in duplicates.rows] == [("d1", "dedup")]
    assert index.page(RecordFilter(status="kept")).total == 10


def test_facets_list_each_filter_value(index: RecordIndex) -> None:
    facets = index.facets()
    assert facets["node"] == ["art", "math"]
    assert facets["reason"] == ["duplicate", "unusable"]
    assert facets["cluster"] == ["c0", "c1"]


def test_a_record_has_its_provenance_texts_and_discarded_drafts(index: RecordIndex) -> None:
    pair = index.record("i3")
    assert pair is not None
    assert pair["content"]["chosen"] == "good" and pair["content"]["rejected"] == "bad"
    assert pair["margin"] == pytest.approx(4.5)
    assert pair["provenance"]["metadata"]["verdicts"]["mode"] == "pairwise"
    drafted = index.record("i1")
    assert drafted is not None
    assert [d["reason"] for d in drafted["discarded"]] == ["echo"]
    dropped = index.record("d2")
    assert dropped is not None
    assert (dropped["status"], dropped["reason"], dropped["why"]) == ("dropped", "unusable", "x")
    assert index.record("nope") is None


def test_a_failed_build_leaves_no_index(tmp_path: Path) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"item_id": "a"}\nnot json\n')
    dest = tmp_path / "j.sqlite"
    with pytest.raises(json.JSONDecodeError):
        build_index(dest, bad, None)
    assert not dest.exists()
    assert list(tmp_path.glob("*.tmp")) == []
