"""The realistic selection corpus: real-shaped lengths, a long tail of raw tags, a few percent
near-duplicates, the same file for the same seed."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

import realistic_corpus

_TAGS = re.compile(r"\[tags: ([^\]]+)\]")


def _vocabulary() -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [a + b + c + d for a in letters[:8] for b in letters for c in letters for d in "aeiou"]


def _row(query: str, answer: str, system: str | None) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
    }


def test_the_corpus_is_real_shaped_and_deterministic(tmp_path: Path) -> None:
    words = _vocabulary()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    made = realistic_corpus.generate(a, 2000, 7, words, _row)
    realistic_corpus.generate(b, 2000, 7, words, _row)
    assert a.read_bytes() == b.read_bytes()
    rows = []
    for line in a.read_text().splitlines():
        try:
            rows.append(json.loads(line)["messages"])
        except json.JSONDecodeError:
            continue
    assert len(rows) == 2000 - made.malformed
    answers = [len(m[1]["content"].split()) for m in rows]
    assert min(answers) >= 50 and max(answers) <= 402  # 50-400 words and the quality marker
    queries = [m[0]["content"] for m in rows]
    clean = [len(_TAGS.sub("", q).split()) for q in queries]
    assert sorted(clean)[len(clean) // 2] in range(15, 45)
    raw = [t for q in queries for t in _TAGS.search(q).group(1).split(", ")]  # type: ignore[union-attr]
    # A long tail: most spellings are rare, and there are several per concept seen.
    assert made.distinct_raw_tags == len(set(raw)) > 2000
    assert 0.02 <= (made.exact_duplicates + made.near_duplicates) / 2000 <= 0.04


def test_duplicates_repeat_a_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    made = realistic_corpus.generate(path, 2000, 3, _vocabulary(), _row)
    answers: dict[str, int] = {}
    for line in path.read_text().splitlines():
        try:
            answer = json.loads(line)["messages"][1]["content"]
        except json.JSONDecodeError:
            continue
        answers[answer] = answers.get(answer, 0) + 1
    repeats = sum(n - 1 for n in answers.values())
    assert repeats == made.exact_duplicates + made.near_duplicates > 0


def test_generated_rows_are_the_files_rows_without_the_malformed(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    made = realistic_corpus.generate(path, 500, 5, _vocabulary(), _row)
    written = []
    for line in path.read_text().splitlines():
        try:
            written.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    rows = list(realistic_corpus.generated_rows(500, 5, _vocabulary(), _row))
    assert rows == written and len(rows) == 500 - made.malformed
