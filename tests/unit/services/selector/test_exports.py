"""Exports: every format in JSON Lines and Parquet, loaded back with datasets and TRL's helpers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import datasets  # type: ignore[import-untyped]
import pyarrow.parquet as pq
import pytest
from trl.data_utils import is_conversational, maybe_extract_prompt, unpair_preference_dataset

from services.selector.examples import Example, Message
from services.selector.exports import (
    SCHEMAS,
    ExportWriter,
    WrittenFile,
    convert,
    skip_reason,
)
from taxoforge.selection import EXPORT_FORMATS


def _msg(role: str, content: str) -> Message:
    return Message(role=role, content=content)


def _example(example_id: str, messages: list[Message], **extra: Any) -> Example:
    example: dict[str, Any] = {
        "id": example_id,
        "item_id": example_id.split("/")[-1],
        "shape": "generated",
        "messages": messages,
        "query": "\n\n".join(m["content"] for m in messages if m["role"] == "user"),
        "response": messages[-1]["content"],
        "tokens": 10,
        "metadata": {"model": "m"},
    }
    example.update(extra)
    return example  # type: ignore[return-value]


SINGLE = _example(
    "job/a", [_msg("user", "Grüße: what is 2+2?"), _msg("assistant", "4, 日本語 too.")]
)
MULTI = _example(
    "job/b",
    [
        _msg("system", "Be brief."),
        _msg("user", "Name a colour."),
        _msg("assistant", "Blue."),
        _msg("user", "Another?"),
        _msg("assistant", "Red."),
    ],
)
PREF_PROMPT = [_msg("system", "You are kind."), _msg("user", "Say hello.")]
PREFERENCE = _example(
    "job/c",
    [*PREF_PROMPT, _msg("assistant", "Hello!")],
    prompt=PREF_PROMPT,
    chosen=[_msg("assistant", "Hello!")],
    rejected=[_msg("assistant", "Go away.")],
    score_chosen=85.0,
    score_rejected=30.0,
)
PREFERENCE_UNSCORED = _example(
    "job/d",
    [_msg("user", "Add 1 and 1."), _msg("assistant", "2")],
    prompt=[_msg("user", "Add 1 and 1.")],
    chosen=[_msg("assistant", "2")],
    rejected=[_msg("assistant", "11")],
)
EXAMPLES = [SINGLE, MULTI, PREFERENCE, PREFERENCE_UNSCORED]


def _export(out: Path, examples: list[Example] = EXAMPLES, **kw: Any) -> ExportWriter:
    with ExportWriter(out, **kw) as writer:
        for example in examples:
            writer.write(example)
    return writer


def _load(path: Path, cache: Path, **kw: Any) -> Any:
    builder = "json" if path.suffix == ".jsonl" else "parquet"
    return datasets.load_dataset(
        builder, data_files=str(path), split="train", cache_dir=str(cache), **kw
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- convert ----


def test_convert_sft_keeps_the_id_and_the_conversation() -> None:
    assert convert(SINGLE, "sft") == {"id": "job/a", "messages": SINGLE["messages"]}


def test_convert_preference_has_explicit_prompt_and_scores_null_when_unknown() -> None:
    assert convert(PREFERENCE, "preference") == {
        "id": "job/c",
        "prompt": PREF_PROMPT,
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
        "score_chosen": 85.0,
        "score_rejected": 30.0,
    }
    record = convert(PREFERENCE_UNSCORED, "preference")
    assert record is not None
    assert record["score_chosen"] is None and record["score_rejected"] is None


def test_convert_non_finite_scores_become_null() -> None:
    example = _example(
        "job/e",
        [_msg("user", "q"), _msg("assistant", "a")],
        prompt=[_msg("user", "q")],
        chosen=[_msg("assistant", "a")],
        rejected=[_msg("assistant", "b")],
        score_chosen=float("nan"),
        score_rejected=float("inf"),
    )
    record = convert(example, "preference")
    assert record is not None
    assert record["score_chosen"] is None and record["score_rejected"] is None


def test_convert_openai_dpo_nests_the_prompt_under_input() -> None:
    assert convert(PREFERENCE, "openai-dpo") == {
        "input": {"messages": PREF_PROMPT},
        "preferred_output": [{"role": "assistant", "content": "Hello!"}],
        "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
    }


def test_convert_without_preference_triple_gives_none_for_preference_formats() -> None:
    assert convert(SINGLE, "preference") is None
    assert convert(SINGLE, "openai-dpo") is None
    assert skip_reason(SINGLE, "preference") == "no_preference"


def test_convert_alpaca_always_has_a_system_column() -> None:
    assert convert(SINGLE, "alpaca") == {
        "id": "job/a",
        "instruction": "Grüße: what is 2+2?",
        "input": "",
        "output": "4, 日本語 too.",
        "system": "",
    }
    record = convert(PREFERENCE, "alpaca")
    assert record is not None and record["system"] == "You are kind."
    assert convert(MULTI, "alpaca") is None
    assert skip_reason(MULTI, "alpaca") == "multi_turn"


def test_convert_sharegpt_maps_roles_to_system_human_gpt() -> None:
    record = convert(MULTI, "sharegpt")
    assert record is not None
    assert [t["from"] for t in record["conversations"]] == [
        "system",
        "human",
        "gpt",
        "human",
        "gpt",
    ]
    assert record["conversations"][2] == {"from": "gpt", "value": "Blue."}


def test_convert_skips_a_conversation_that_does_not_end_with_the_reply() -> None:
    broken = _example("job/x", [_msg("user", "q"), _msg("assistant", "a"), _msg("user", "q2")])
    for fmt in ("sft", "openai-sft", "sharegpt", "alpaca"):
        assert skip_reason(broken, fmt) == "no_assistant_reply"


def test_convert_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        convert(SINGLE, "csv")


# ---- ExportWriter: files ----


def _expected(fmt: str) -> list[dict[str, Any]]:
    """What a loaded file holds: every schema column, absent ones (alpaca's system) as None."""
    rows = [r for r in (convert(e, fmt) for e in EXAMPLES) if r is not None]
    return [{name: row.get(name) for name in SCHEMAS[fmt].names} for row in rows]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_format_round_trips_through_datasets(tmp_path: Path, fmt: str, suffix: str) -> None:
    _export(tmp_path / "out")

    dataset = _load(tmp_path / "out" / "data" / f"{fmt}{suffix}", tmp_path / "cache")

    assert dataset.column_names == SCHEMAS[fmt].names
    assert dataset.to_list() == _expected(fmt)


def test_row_counts_per_format_follow_what_each_format_takes(tmp_path: Path) -> None:
    files = _export(tmp_path).close()

    counts = {(f.kind, f.format): f.records for f in files}
    expected = {"sft": 4, "openai-sft": 4, "sharegpt": 4, "alpaca": 3}
    expected |= {"preference": 2, "openai-dpo": 2}
    for fmt, n in expected.items():
        assert counts[(fmt, "jsonl")] == n and counts[(fmt, "parquet")] == n
    assert {f.path for f in files} == {
        tmp_path / "data" / f"{fmt}{suffix}"
        for fmt in EXPORT_FORMATS
        for suffix in (".jsonl", ".parquet")
    }


def test_openai_files_have_exactly_the_allowed_keys(tmp_path: Path) -> None:
    _export(tmp_path)

    sft_lines = _lines(tmp_path / "data" / "openai-sft.jsonl")
    dpo_lines = _lines(tmp_path / "data" / "openai-dpo.jsonl")

    assert len(sft_lines) == 4 and len(dpo_lines) == 2
    for line in sft_lines:
        assert set(line) == {"messages"}
        assert all(set(m) == {"role", "content"} for m in line["messages"])
    for line in dpo_lines:
        assert set(line) == {"input", "preferred_output", "non_preferred_output"}
        assert set(line["input"]) == {"messages"}
        assert line["input"]["messages"][-1]["role"] == "user"
        for key in ("preferred_output", "non_preferred_output"):
            assert [m["role"] for m in line[key]] == ["assistant"]
            assert set(line[key][0]) == {"role", "content"}
    assert set(pq.read_schema(tmp_path / "data" / "openai-sft.parquet").names) == {"messages"}


def test_openai_line_i_is_the_ith_row_of_its_id_bearing_twin(tmp_path: Path) -> None:
    _export(tmp_path)
    data = tmp_path / "data"

    sft, openai_sft = _lines(data / "sft.jsonl"), _lines(data / "openai-sft.jsonl")
    pref, openai_dpo = _lines(data / "preference.jsonl"), _lines(data / "openai-dpo.jsonl")

    assert [r["id"] for r in sft] == ["job/a", "job/b", "job/c", "job/d"]
    assert [r["messages"] for r in sft] == [r["messages"] for r in openai_sft]
    assert [r["id"] for r in pref] == ["job/c", "job/d"]
    assert [r["chosen"] for r in pref] == [r["preferred_output"] for r in openai_dpo]
    assert [r["prompt"] for r in pref] == [r["input"]["messages"] for r in openai_dpo]


def test_jsonl_keeps_non_ascii_text_readable(tmp_path: Path) -> None:
    _export(tmp_path)

    assert "日本語" in (tmp_path / "data" / "sft.jsonl").read_text(encoding="utf-8")


def test_alpaca_jsonl_rows_all_have_the_same_keys(tmp_path: Path) -> None:
    _export(tmp_path)

    lines = {r["id"]: r for r in _lines(tmp_path / "data" / "alpaca.jsonl")}

    assert set(lines) == {"job/a", "job/c", "job/d"}
    assert lines["job/a"]["system"] == "" and lines["job/c"]["system"] == "You are kind."
    assert len({tuple(sorted(r)) for r in lines.values()}) == 1


def test_skipped_counts_reasons_per_format(tmp_path: Path) -> None:
    writer = _export(tmp_path)

    assert writer.skipped["alpaca"] == Counter({"multi_turn": 1})
    assert writer.skipped["preference"] == Counter({"no_preference": 2})
    assert writer.skipped["openai-dpo"] == Counter({"no_preference": 2})
    assert writer.skipped["sft"] == Counter()


# ---- TRL ----


def test_trl_sees_sft_and_preference_rows_as_conversational(tmp_path: Path) -> None:
    _export(tmp_path)
    sft = _load(tmp_path / "data" / "sft.parquet", tmp_path / "cache")
    preference = _load(tmp_path / "data" / "preference.parquet", tmp_path / "cache")

    assert all(is_conversational(row) for row in sft)
    assert all(is_conversational(row) for row in preference)


def test_trl_maybe_extract_prompt_leaves_explicit_prompt_rows_unchanged(tmp_path: Path) -> None:
    _export(tmp_path)
    preference = _load(tmp_path / "data" / "preference.jsonl", tmp_path / "cache")

    for row in preference:
        assert maybe_extract_prompt(row) == row


def test_trl_unpair_preference_gives_two_labelled_rows_per_pair(tmp_path: Path) -> None:
    _export(tmp_path)
    preference = _load(tmp_path / "data" / "preference.parquet", tmp_path / "cache")

    unpaired = unpair_preference_dataset(preference)

    assert unpaired.num_rows == 2 * preference.num_rows == 4
    assert {"prompt", "completion", "label"} <= set(unpaired.column_names)
    assert sorted(unpaired["label"]) == [False, False, True, True]
    chosen = [r["completion"] for r in unpaired if r["label"]]
    assert chosen == [[{"role": "assistant", "content": "Hello!"}], PREFERENCE_UNSCORED["chosen"]]


# ---- streaming, empty files, closing ----


def test_parquet_is_written_in_row_groups_of_row_group_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[int] = []
    original = pq.ParquetWriter.write_table

    def spy(self: Any, table: Any, *args: Any, **kwargs: Any) -> None:
        written.append(table.num_rows)
        original(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", spy)
    examples = [
        _example(f"job/{i}", [_msg("user", f"q{i}"), _msg("assistant", f"a{i}")]) for i in range(5)
    ]

    with ExportWriter(tmp_path, formats=["sft"], row_group=2) as writer:
        for example in examples:
            writer.write(example)
        assert written == [2, 2]  # streamed while writing: at most one row group is held

    assert written == [2, 2, 1]
    parquet = pq.ParquetFile(tmp_path / "data" / "sft.parquet")
    assert parquet.metadata.num_row_groups == 3
    assert [parquet.metadata.row_group(i).num_rows for i in range(3)] == [2, 2, 1]
    assert parquet.read().column("id").to_pylist() == [f"job/{i}" for i in range(5)]


def test_format_without_records_still_writes_loadable_files_with_schema(tmp_path: Path) -> None:
    files = _export(tmp_path, [SINGLE], formats=["sft", "preference"]).close()

    assert [(f.kind, f.format, f.records) for f in files] == [
        ("sft", "jsonl", 1),
        ("sft", "parquet", 1),
        ("preference", "jsonl", 0),
        ("preference", "parquet", 0),
    ]
    parquet = tmp_path / "data" / "preference.parquet"
    assert pq.read_schema(parquet).equals(SCHEMAS["preference"])
    # datasets refuses an empty split unless streamed; a streamed empty file loads with 0 rows.
    loaded = _load(parquet, tmp_path / "cache", streaming=True)
    assert list(loaded) == [] and list(loaded.features) == SCHEMAS["preference"].names
    jsonl = tmp_path / "data" / "preference.jsonl"
    assert jsonl.read_bytes() == b""
    features = datasets.Features.from_arrow_schema(SCHEMAS["preference"])
    assert list(_load(jsonl, tmp_path / "cache", streaming=True, features=features)) == []


def test_only_the_requested_formats_are_written(tmp_path: Path) -> None:
    _export(tmp_path, [SINGLE], formats=["alpaca"])

    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "alpaca.jsonl",
        "alpaca.parquet",
    ]


def test_unknown_format_or_row_group_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export formats"):
        ExportWriter(tmp_path, formats=["sft", "csv"])
    with pytest.raises(ValueError, match="row_group"):
        ExportWriter(tmp_path, row_group=0)


def test_exception_in_with_block_closes_files_and_propagates(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), ExportWriter(tmp_path) as writer:
        writer.write(SINGLE)
        writer.write_extra("provenance", {"id": "job/a"})
        raise RuntimeError("boom")

    assert writer.closed
    assert pq.read_table(tmp_path / "data" / "sft.parquet").num_rows == 1  # footer written
    assert len(_lines(tmp_path / "data" / "sft.jsonl")) == 1
    assert _lines(tmp_path / "meta" / "provenance.jsonl") == [{"id": "job/a"}]


def test_close_twice_is_harmless_and_writing_after_close_fails(tmp_path: Path) -> None:
    writer = _export(tmp_path, [SINGLE])

    first, second = writer.close(), writer.close()

    assert first == second and len(first) == 2 * len(EXPORT_FORMATS)
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(SINGLE)
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_extra("dropped", {})


def test_write_extra_writes_meta_side_files_and_lists_them(tmp_path: Path) -> None:
    with ExportWriter(tmp_path, formats=["sft"]) as writer:
        writer.write(SINGLE)
        writer.write_extra("provenance", {"id": "job/a", "source": Path("in/rows.jsonl")})
        writer.write_extra("dropped", {"id": "job/z", "reason": "duplicate"})
        writer.write_extra("dropped", {"id": "job/y", "reason": "contaminated"})

    files = writer.close()

    assert WrittenFile("provenance", "jsonl", tmp_path / "meta" / "provenance.jsonl", 1) in files
    assert WrittenFile("dropped", "jsonl", tmp_path / "meta" / "dropped.jsonl", 2) in files
    provenance = _lines(tmp_path / "meta" / "provenance.jsonl")
    assert provenance == [{"id": "job/a", "source": "in/rows.jsonl"}]
    assert [r["reason"] for r in _lines(tmp_path / "meta" / "dropped.jsonl")] == [
        "duplicate",
        "contaminated",
    ]


def test_a_side_file_opened_up_front_is_written_even_when_empty(tmp_path: Path) -> None:
    with ExportWriter(tmp_path, formats=["sft"]) as writer:
        writer.open_extra("dropped")
        writer.open_extra("dropped")  # twice is once

    assert WrittenFile("dropped", "jsonl", tmp_path / "meta" / "dropped.jsonl", 0) in writer.close()
    assert (tmp_path / "meta" / "dropped.jsonl").read_text() == ""


@pytest.mark.parametrize("kind", ["../escape", "a/b", "", "sft"])
def test_write_extra_rejects_kinds_that_are_no_plain_side_file_name(
    tmp_path: Path, kind: str
) -> None:
    with ExportWriter(tmp_path, formats=["sft"]) as writer, pytest.raises(ValueError):
        writer.write_extra(kind, {})
