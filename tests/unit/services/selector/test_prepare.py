"""The prepare step's filter: rows over the record limit go to dropped.jsonl, the rest on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.selector.benchmarks import benchmark_prompts
from services.selector.decontam import Decontaminator, Deduplicator
from services.selector.examples import count_tokens_of, load_examples
from services.selector.imports import ImportLimits, read_examples, to_example
from services.selector.screening import Tally, empty_reason, screen


def _sft(user: str, reply: str = "Sure.") -> dict[str, Any]:
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": turns}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_an_oversize_row_and_a_malformed_one_are_dropped_with_their_rows(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    rows = [_sft("first question"), _sft("x" * 300_000), "{oops", _sft("last question")]
    source.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
        encoding="utf-8",
    )
    out, dropped = tmp_path / "examples.jsonl", tmp_path / "dropped.jsonl"

    tally = screen(
        read_examples(source, "jsonl", "auto", "job"), "job", Deduplicator(0.8), None, out, dropped
    )

    assert [e["item_id"] for e in _lines(out)] == ["r0000001", "r0000004"]
    drops = {d["item_id"]: d for d in _lines(dropped)}
    assert set(drops) == {"r0000002", "r0000003"}
    big = drops["r0000002"]
    assert (big["id"], big["reason"], big["row"]) == ("job/r0000002", "too_large", 2)
    assert "over the 256 KiB limit of one record" in big["detail"]
    assert big["stage"]
    assert drops["r0000003"]["reason"] == "malformed"
    # Every row is kept or dropped: planned == exported + dropped holds from here on.
    assert tally.rows == 4 and tally.kept + len(drops) == tally.rows
    assert tally.malformed == 2
    assert [row for row, _ in tally.errors] == [2, 3]


def test_an_example_whose_texts_are_over_the_limit_is_dropped_too(tmp_path: Path) -> None:
    # A generated example is not read from a file: its query and response are measured.
    small = to_example(_sft("short question"), 1, "job")
    large = to_example(_sft("long question", "y" * 2000), 2, "job")
    out, dropped = tmp_path / "examples.jsonl", tmp_path / "dropped.jsonl"

    tally = screen([small, large], "job", Deduplicator(0.8), None, out, dropped, 1000)

    assert [e["item_id"] for e in _lines(out)] == ["r0000001"]
    (drop,) = _lines(dropped)
    assert (drop["item_id"], drop["reason"]) == ("r0000002", "too_large")
    assert "record limit" in drop["detail"]
    assert tally.too_large == 1 and tally.kept == 1


def test_a_benchmark_line_over_the_record_limit_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bench.txt"
    path.write_bytes(b"first prompt\n" + b"z" * 5000 + b"\nlast prompt\n")

    prompts = list(benchmark_prompts(path, ImportLimits(max_record_bytes=1000)))

    assert prompts == ["first prompt", "last prompt"]


def test_why_nothing_is_left_names_the_first_malformed_rows() -> None:
    assert empty_reason(Tally()) == "the file holds no rows"
    tally = Tally(rows=2, malformed=2, errors=[(1, "not JSON"), (2, "no messages")])
    assert empty_reason(tally) == (
        "none of its 2 rows could be imported (row 1: not JSON; row 2: no messages)"
    )
    assert empty_reason(Tally(rows=3, duplicates=3)) == (
        "nothing is left after dedup and decontamination"
    )


def _screen_rows(tmp_path: Path, rows: list[Any], mode: str) -> tuple[list[str], list[Any]]:
    source = tmp_path / f"rows-{mode}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, dropped = tmp_path / f"kept-{mode}.jsonl", tmp_path / f"dropped-{mode}.jsonl"
    screen(
        read_examples(source, "jsonl", "auto", "job"),
        "job",
        Deduplicator(0.8, mode),
        None,
        out,
        dropped,
    )
    return [e["item_id"] for e in _lines(out)], _lines(dropped)


def test_two_answers_per_prompt_both_reach_selection_unless_dedup_is_by_query(
    tmp_path: Path,
) -> None:
    rows = [
        _sft("Why is the sky blue?", "Rayleigh scattering of sunlight by the air."),
        _sft("Why is the sky blue?", "Because it reflects the sea."),
        _sft("why is the sky BLUE", "Rayleigh scattering of sunlight by the air!"),
    ]

    kept, dropped = _screen_rows(tmp_path, rows, "record")
    assert kept == ["r0000001", "r0000002"]
    assert [(d["item_id"], d["reason"]) for d in dropped] == [("r0000003", "duplicate")]

    kept, dropped = _screen_rows(tmp_path, rows, "query")
    assert kept == ["r0000001"]
    assert {d["item_id"] for d in dropped} == {"r0000002", "r0000003"}


def test_alpaca_tasks_on_one_long_input_are_compared_without_it(tmp_path: Path) -> None:
    article = " ".join(
        f"Sentence {i} tells of the harbour, its boats and its fishers." for i in range(30)
    )
    rows = [
        {"instruction": "Summarize the text in one paragraph.", "input": article, "output": "A."},
        {"instruction": "List the boats the text names.", "input": article, "output": "B."},
        {"instruction": "Translate the text into French.", "input": article, "output": "C."},
    ]

    kept, dropped = _screen_rows(tmp_path, rows, "query")

    # Their queries are over 0.9 similar (the article dominates); their tasks are not.
    assert kept == ["r0000001", "r0000002", "r0000003"] and dropped == []


def test_tokens_left_uncounted_by_the_reader_are_counted_for_what_is_kept(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    rows = [_sft(f"question number {i} about tokens", "Answer " * i) for i in range(1, 700)]
    rows.append(_sft("question number 1 about tokens", "Answer "))  # a duplicate of row 1
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lazy = list(read_examples(source, "jsonl", "auto", "job", count_tokens=False))
    assert {e["tokens"] for e in lazy if isinstance(e, dict)} == {-1}
    out, dropped = tmp_path / "examples.jsonl", tmp_path / "dropped.jsonl"

    tally = screen(lazy, "job", Deduplicator(0.8), None, out, dropped)

    eager = {
        e["item_id"]: e["tokens"]
        for e in read_examples(source, "jsonl", "auto", "job")
        if isinstance(e, dict)
    }
    kept = _lines(out)
    assert tally.kept == len(kept) == 699 and tally.duplicates == 1  # pages of 512 and more
    assert all(e["tokens"] == eager[e["item_id"]] > 0 for e in kept)


def test_uncounted_examples_are_counted_when_selection_needs_them(tmp_path: Path) -> None:
    # A budget in records: screening writes -1, and the select step counts the rows the
    # methods pick, from the work file, to the counts screening would have written.
    source = tmp_path / "rows.jsonl"
    rows = [_sft(f"question number {i} about tokens", "Answer " * i) for i in range(1, 40)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, dropped = tmp_path / "examples.jsonl", tmp_path / "dropped.jsonl"
    lazy = read_examples(source, "jsonl", "auto", "job", count_tokens=False)
    screen(lazy, "job", Deduplicator(0.8), None, out, dropped, count_tokens=False)
    assert {e["tokens"] for e in _lines(out)} == {-1}
    eager = [
        e["tokens"] for e in read_examples(source, "jsonl", "auto", "job") if isinstance(e, dict)
    ]

    loaded = load_examples(out)
    assert count_tokens_of(out, loaded, [3, 7, 7, 20]) == 3
    got = [c.tokens for c in loaded.candidates]
    assert [got[i] for i in (3, 7, 20)] == [eager[i] for i in (3, 7, 20)]
    assert got.count(-1) == len(rows) - 3  # only what was asked for
    assert count_tokens_of(out, loaded, [3, 7]) == 0  # counted once


def test_checks_moved_to_a_worker_process_give_the_same_files(tmp_path: Path) -> None:
    # A large import's contamination checks and token counts run in a worker process once a
    # few pages are read; the files, their order and the tally are those of screening inline.
    words = [f"word{i}" for i in range(12)]
    prompt = "name the largest planet in the solar system and say why it is the largest one"
    source = tmp_path / "rows.jsonl"
    lines = []
    for i in range(1300):
        question = f"question {i}: " + " ".join(words[(i * 7 + j) % 12] for j in range(i % 9 + 3))
        if i % 97 == 5:
            question = f"please answer: {prompt}"  # overlaps the benchmark
        lines.append(json.dumps(_sft(question, "Answer " * (i % 40 + 1))))
        if i % 50 == 0:
            lines.append(json.dumps(_sft(question, "Answer " * (i % 40 + 1))))  # exact repeat
        if i % 333 == 0:
            lines.append("{broken")
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _run(name: str, offload_after_rows: int) -> tuple[Tally, str, str]:
        decontam = Decontaminator(ngram=8)
        decontam.add_benchmark("bench", [prompt])
        out, dropped = tmp_path / f"{name}-examples.jsonl", tmp_path / f"{name}-dropped.jsonl"
        examples = read_examples(source, "jsonl", "auto", "job", count_tokens=False)
        tally = screen(
            examples,
            "job",
            Deduplicator(0.8),
            decontam,
            out,
            dropped,
            offload_after_rows=offload_after_rows,
        )
        return tally, out.read_text(encoding="utf-8"), dropped.read_text(encoding="utf-8")

    inline = _run("inline", offload_after_rows=10**9)
    worker = _run("worker", offload_after_rows=512)  # from the second page on
    assert worker == inline
    tally, kept, dropped = worker
    assert tally.duplicates == 26 and tally.malformed == 4 and sum(tally.contaminated.values()) > 0
    assert all(json.loads(line)["tokens"] > 0 for line in kept.splitlines())
    assert '"reason": "contaminated"' in dropped


def test_each_kept_example_is_handed_on_in_the_files_order(tmp_path: Path) -> None:
    # Tag pages are made from what screening hands on: exactly the examples it wrote.
    rows = [
        _sft("how do binary search trees stay balanced after an insertion"),
        _sft("how do binary search trees stay balanced after an insertion"),  # a duplicate
        _sft("x" * 300_000),  # too large
        _sft("what is the capital of the country with the longest coastline"),
        _sft("name three sorting algorithms and their complexities in the worst case"),
    ]
    examples = [to_example(r, i, "job") for i, r in enumerate(rows, 1)]
    out, dropped = tmp_path / "examples.jsonl", tmp_path / "dropped.jsonl"
    handed: list[dict[str, Any]] = []

    for offload in (10**9, 0):  # in this thread, then with the worker process
        handed.clear()
        screen(examples, "job", Deduplicator(0.8), None, out, dropped, 1000, offload, handed.append)
        assert [e["item_id"] for e in handed] == [e["item_id"] for e in _lines(out)]
        assert [e["item_id"] for e in handed] == ["r0000001", "r0000004", "r0000005"]


def test_the_record_limit_is_measured_in_utf8_bytes_whatever_the_characters() -> None:
    # Whether a record fits is decided from its length in characters where that settles it,
    # and from its bytes otherwise: the same answer as measuring the bytes, at every limit.
    from services.selector.screening import _fits, _record_bytes

    texts = ["a" * 40, "é" * 40, "語" * 40, "🙂" * 40, "a" * 7 + "🙂" * 9 + "é" * 3, ""]
    for query in texts:
        for response in texts:
            example = to_example(_sft(query or "q", response or "r"), 1, "job")
            size = _record_bytes(example)
            for limit in {1, size // 4, size // 2, size - 1, size, size + 1, size * 4, 256 * 1024}:
                if limit > 0:
                    assert _fits(example, limit) == (size <= limit), (query, response, limit)
