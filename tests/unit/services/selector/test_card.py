"""Dataset card: the Hub's YAML header, composition and method tables, quality charts."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import DatasetCard

from services.selector.card import (
    BUCKETS,
    CardInput,
    histogram,
    markdown_cell,
    size_category,
    write_card,
)
from services.selector.examples import Example, Message
from services.selector.exports import ExportWriter, WrittenFile
from taxoforge.selection import EXPORT_FORMATS

SVG = "{http://www.w3.org/2000/svg}"


def _example(example_id: str, preference: bool = False) -> Example:
    messages = [Message(role="user", content="q"), Message(role="assistant", content="a")]
    example: dict[str, Any] = {
        "id": example_id,
        "item_id": example_id,
        "shape": "generated",
        "messages": messages,
        "query": "q",
        "response": "a",
        "tokens": 2,
        "metadata": {},
    }
    if preference:
        example |= {
            "prompt": messages[:1],
            "chosen": messages[1:],
            "rejected": [Message(role="assistant", content="b")],
        }
    return example  # type: ignore[return-value]


def _export(out: Path, examples: list[Example]) -> list[WrittenFile]:
    with ExportWriter(out) as writer:
        for example in examples:
            writer.write(example)
        writer.write_extra("provenance", {"id": "x"})
    return writer.close()


def _card(out: Path, **overrides: Any) -> CardInput:
    examples = [_example("j/0", preference=True), _example("j/1"), _example("j/2")]
    fields: dict[str, Any] = {
        "job_id": "job-7",
        "name": "Physics tutor",
        "languages": ["en", "fr"],
        "method": "tacos",
        "files": _export(out, examples),
        "composition": {
            "taxonomy node": Counter({"Science > Physics": 2, "Science > Chemistry": 1}),
            "language": Counter({"en": 2, "fr": 1}),
            "cluster": Counter({"0": 2, "3": 1}),
        },
        "selected_quality": [72.0, 88.5, 91.0],
        "candidate_quality": [12.0, 40.0, 55.0, 72.0, 88.5, 91.0],
        "settings": {
            "generation": {"model": "smollm2", "temperatures": (0.2, 0.8)},
            "selection": {"method": "tacos", "budget": {"records": 3}},
        },
        "report": {
            "candidates": 6,
            "selected": 3,
            "duplicates": 4,
            "near_duplicates": 5,
            "contaminated": {"gsm8k": 7, "mmlu": 8},
            "methods": [
                {"method": "tacos", "records": 3, "tokens": 60, "mean_quality": 83.833},
                {"method": "random", "records": 3, "tokens": 55, "clusters_covered": 2},
            ],
        },
        "cluster_sizes": Counter({"0": 4, "3": 2}),
    }
    fields.update(overrides)
    return CardInput(**fields)


def _cells(row: str) -> list[str]:
    """A markdown table row's cells, unescaped (``\\x`` is the literal x)."""
    cells, current, chars = [], "", iter(row.strip()[1:])
    for char in chars:
        if char == "\\":
            current += next(chars)
        elif char == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += char
    return cells


def _table_after(readme: str, heading: str) -> list[list[str]]:
    """The rows (header excluded) of the first table after ``heading``."""
    lines = readme[readme.index(heading + "\n") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def _yaml_blocks(readme: str) -> list[Any]:
    blocks = re.findall(r"^(`{3,})yaml\n(.*?)^\1$", readme, re.M | re.S)
    return [yaml.safe_load(body) for _, body in blocks]


# ---- helpers ----


@pytest.mark.parametrize(
    ("n", "bucket"),
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1_000, "1K<n<10K"),
        (99_999, "10K<n<100K"),
        (100_000, "100K<n<1M"),
        (2_500_000, "1M<n<10M"),
        (10**13, "n>1T"),
    ],
)
def test_size_category_uses_the_hub_buckets(n: int, bucket: str) -> None:
    assert size_category(n) == bucket


def test_histogram_counts_ten_buckets_of_1_to_100() -> None:
    counts = histogram([1, 10, 10.5, 20, 55, 100, 0, 150, math.nan])

    assert len(BUCKETS) == 10 and BUCKETS[0] == "1-10" and BUCKETS[-1] == "91-100"
    assert counts == [3, 2, 0, 0, 0, 1, 0, 0, 0, 2]


def test_markdown_cell_escapes_pipes_backslashes_newlines_and_tags() -> None:
    assert markdown_cell("a|b") == "a\\|b"
    assert markdown_cell("a\\|b") == "a\\\\\\|b"
    assert markdown_cell("one\ntwo\r\nthree") == "one<br>two<br>three"
    assert markdown_cell("<think>") == "&lt;think>"
    assert markdown_cell("") == "(none)"


# ---- README header ----


def test_readme_parses_as_hub_dataset_card_with_its_metadata(tmp_path: Path) -> None:
    write_card(tmp_path, _card(tmp_path))

    data = DatasetCard.load(tmp_path / "README.md").data

    assert data.license == "other"
    assert data.language == ["en", "fr"]
    assert data.size_categories == ["n<1K"]
    assert data.task_categories == ["text-generation"]
    assert data.pretty_name == "Physics tutor"
    assert data.tags == ["synthetic", "taxoforge", "sft", "dpo"]
    configs = data.to_dict()["configs"]
    assert [c["config_name"] for c in configs] == list(EXPORT_FORMATS)
    assert [c.get("default", False) for c in configs] == [True] + [False] * (
        len(EXPORT_FORMATS) - 1
    )
    for config in configs:
        (data_file,) = config["data_files"]
        assert data_file == {"split": "train", "path": f"data/{config['config_name']}.parquet"}
        assert (tmp_path / data_file["path"]).is_file()


def test_configs_and_tags_leave_out_formats_without_records(tmp_path: Path) -> None:
    files = _export(tmp_path, [_example("j/0"), _example("j/1")])

    write_card(tmp_path, _card(tmp_path, files=files, license="apache-2.0"))

    data = DatasetCard.load(tmp_path / "README.md").data
    names = [c["config_name"] for c in data.to_dict()["configs"]]
    assert names == ["sft", "openai-sft", "alpaca", "sharegpt"]
    assert "dpo" not in data.tags and "sft" in data.tags
    assert data.license == "apache-2.0"


def test_size_category_follows_the_records_written(tmp_path: Path) -> None:
    files = [
        WrittenFile("sft", "parquet", tmp_path / "data" / "sft.parquet", 12_345),
        WrittenFile("provenance", "jsonl", tmp_path / "meta" / "provenance.jsonl", 99_999_999),
    ]

    write_card(tmp_path, _card(tmp_path, files=files))

    assert DatasetCard.load(tmp_path / "README.md").data.size_categories == ["10K<n<100K"]


# ---- README body ----


def test_composition_tables_hold_the_counts_sorted_by_count(tmp_path: Path) -> None:
    composition = {"taxonomy node": Counter({"Chemistry": 1, "Physics": 5, "Biology": 3})}

    write_card(tmp_path, _card(tmp_path, composition=composition))

    rows = _table_after((tmp_path / "README.md").read_text(), "### Taxonomy node")
    assert rows == [
        ["Physics", "5", "55.6%"],
        ["Biology", "3", "33.3%"],
        ["Chemistry", "1", "11.1%"],
    ]


def test_value_with_pipe_or_newline_stays_in_its_own_cell(tmp_path: Path) -> None:
    composition = {"taxonomy node": Counter({"Math | Algebra": 3, "a\\|b": 2, "two\nlines": 1})}

    write_card(tmp_path, _card(tmp_path, composition=composition))

    rows = _table_after((tmp_path / "README.md").read_text(), "### Taxonomy node")
    assert rows == [
        ["Math | Algebra", "3", "50.0%"],
        ["a\\|b", "2", "33.3%"],
        ["two<br>lines", "1", "16.7%"],
    ]


def test_summary_says_what_how_many_and_which_method(tmp_path: Path) -> None:
    write_card(tmp_path, _card(tmp_path))

    readme = (tmp_path / "README.md").read_text()

    summary = "3 records chosen by the `tacos` selection method out of 6 candidates"
    assert f"(job `job-7`): {summary}" in readme
    assert 'load_dataset("parquet", data_files="data/preference.parquet", split="train")' in readme


def test_repo_id_adds_a_hub_load_snippet_per_config(tmp_path: Path) -> None:
    write_card(tmp_path, _card(tmp_path, repo_id="me/physics"))

    readme = (tmp_path / "README.md").read_text()

    for fmt in EXPORT_FORMATS:
        assert f'load_dataset("me/physics", "{fmt}", split="train")' in readme


def test_dedup_and_method_tables_show_the_report(tmp_path: Path) -> None:
    write_card(tmp_path, _card(tmp_path))

    readme = (tmp_path / "README.md").read_text()

    assert _table_after(readme, "## Deduplication and decontamination") == [
        ["Candidates", "6"],
        ["Exact duplicates removed", "4"],
        ["Near duplicates removed", "5"],
        ["Contaminated (gsm8k) removed", "7"],
        ["Contaminated (mmlu) removed", "8"],
        ["Selected", "3"],
    ]
    assert "| method | records | tokens | mean quality | clusters covered |" in readme
    assert _table_after(readme, "## Selection methods") == [
        ["tacos (used)", "3", "60", "83.83", "-"],
        ["random", "3", "55", "-", "2"],
    ]


def test_settings_are_yaml_blocks_that_parse_back(tmp_path: Path) -> None:
    settings = {
        "generation": {"model": "smollm2", "temperatures": (0.2, 0.8)},
        "judging": {"template": "```\nfenced\n```", "path": Path("/x")},
    }

    write_card(tmp_path, _card(tmp_path, settings=settings))

    assert _yaml_blocks((tmp_path / "README.md").read_text()) == [
        {"model": "smollm2", "temperatures": [0.2, 0.8]},
        {"template": "```\nfenced\n```", "path": "/x"},
    ]


# ---- images ----


def _svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    return root


def test_charts_are_svg_files_listed_relative_to_out_dir(tmp_path: Path) -> None:
    written = write_card(tmp_path, _card(tmp_path))

    assert written == [Path("README.md"), Path("images/quality.svg"), Path("images/clusters.svg")]
    for image in written[1:]:
        _svg(tmp_path / image)
    readme = (tmp_path / "README.md").read_text()
    assert "](images/quality.svg)" in readme and "](images/clusters.svg)" in readme


def test_quality_chart_bars_are_the_bucket_shares(tmp_path: Path) -> None:
    write_card(tmp_path, _card(tmp_path))

    root = _svg(tmp_path / "images" / "quality.svg")
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "All candidates (6)" in texts and "Selected (3)" in texts
    assert all(bucket in texts for bucket in BUCKETS)
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("fill-opacity") in ("0.45", "0.85")]
    bars = [b for b in bars if float(b.get("height", 0)) > 1 and float(b.get("width", 0)) > 20]
    heights = sorted({round(float(b.get("height", 0)), 1) for b in bars})
    # Shares 1/6 and 2/6 of the candidates, 1/3 of the selected: two heights, the second twice.
    assert len(heights) == 2 and heights[1] == pytest.approx(2 * heights[0], abs=0.2)


def test_chart_labels_are_text_never_markup(tmp_path: Path) -> None:
    evil = '<script>alert(1)</script><a href="javascript:x">&amp;'
    card = _card(tmp_path, cluster_sizes=Counter({evil: 5, "plain": 3}))

    write_card(tmp_path, card)

    raw = (tmp_path / "images" / "clusters.svg").read_text()
    root = _svg(tmp_path / "images" / "clusters.svg")
    assert "<script" not in raw and "<a " not in raw
    tags = {e.tag.removeprefix(SVG) for e in root.iter()}
    assert tags <= {"svg", "title", "rect", "line", "text"}
    assert any((t.text or "").startswith("<script>alert(1)") for t in root.iter(f"{SVG}text"))


def test_chart_labels_with_control_characters_still_make_a_valid_image(tmp_path: Path) -> None:
    odd = "tag\x00with\x07controls\x1b[31m and a lone \ud800 surrogate"
    card = _card(tmp_path, cluster_sizes=Counter({odd: 5, "plain": 3}))

    write_card(tmp_path, card)

    root = _svg(tmp_path / "images" / "clusters.svg")  # parses: nothing XML forbids
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert any(t.startswith("tagwithcontrols[31m") for t in texts)


def test_quality_section_has_mean_median_and_bucket_counts(tmp_path: Path) -> None:
    write_card(tmp_path, _card(tmp_path))

    section = (tmp_path / "README.md").read_text().split("## Quality\n")[1]

    tables = [line for line in section.splitlines() if line.startswith("| ")]
    assert [_cells(t) for t in tables[2:4]] == [
        ["Selected", "3", "83.8", "88.5"],
        ["All candidates", "6", "59.8", "63.5"],
    ]
    buckets = {row[0]: row[1:] for row in map(_cells, tables[6:16])}
    assert buckets["11-20"] == ["1", "0"] and buckets["91-100"] == ["1", "1"]
    assert buckets["81-90"] == ["1", "1"] and buckets["1-10"] == ["0", "0"]


def test_no_cluster_chart_without_clusters(tmp_path: Path) -> None:
    composition = {"language": Counter({"en": 3})}

    written = write_card(
        tmp_path, _card(tmp_path, composition=composition, cluster_sizes=Counter())
    )

    assert written == [Path("README.md"), Path("images/quality.svg")]
    assert "clusters.svg" not in (tmp_path / "README.md").read_text()


def _tacos(failures: int, reasons: list[tuple[str, int]], tagged: int = 90) -> dict[str, Any]:
    """A report's ``tacos`` as ``to_dict`` gives it (a zero count is left out)."""
    tacos: dict[str, Any] = {"tagged": tagged}
    if failures:
        tacos["tag_failures"] = failures
    if reasons:
        tacos["tag_failure_reasons"] = [
            {"stage": "tag", "reason": reason, "items": n} for reason, n in reasons
        ]
    return tacos


def test_clusters_section_says_how_many_went_untagged_and_why(tmp_path: Path) -> None:
    evil = "reply was not JSON: <script>x</script> | [a](javascript:1)\nsecond line"
    report = _card(tmp_path).report | {
        "tacos": _tacos(10, [("no tags in the reply", 6), (evil, 3)])
    }

    write_card(tmp_path, _card(tmp_path, report=report))

    readme = (tmp_path / "README.md").read_text()
    section = readme.split("## Clusters\n")[1].split("\n## ")[0]
    assert "](images/clusters.svg)" in section  # the chart stays
    assert "10 of 100 candidates went untagged" in section
    assert _table_after(readme, "## Clusters") == [
        ["tag", "no tags in the reply", "6"],
        ["tag", evil.replace("<", "&lt;").replace("\n", "<br>"), "3"],
        ["-", "(other reasons)", "1"],  # the report names the most common reasons only
    ]
    assert "<script>" not in readme


def test_untagged_candidates_are_told_even_without_a_cluster_chart(tmp_path: Path) -> None:
    report = {"candidates": 4, "tacos": _tacos(4, [("tagger unreachable", 4)], tagged=0)}
    card = _card(tmp_path, report=report, composition={}, cluster_sizes=Counter())

    write_card(tmp_path, card)

    readme = (tmp_path / "README.md").read_text()
    assert "clusters.svg" not in readme
    assert "4 of 4 candidates went untagged" in readme
    assert _table_after(readme, "## Clusters") == [["tag", "tagger unreachable", "4"]]


@pytest.mark.parametrize("tacos", [None, _tacos(0, []), {"tag_failures": 0}])
def test_nothing_is_said_of_tagging_when_every_candidate_was_tagged(
    tmp_path: Path, tacos: dict[str, Any] | None
) -> None:
    report = _card(tmp_path).report | ({"tacos": tacos} if tacos is not None else {})

    bare = tmp_path / "bare"
    write_card(tmp_path, _card(tmp_path, report=report))
    write_card(bare, _card(bare, report=report, cluster_sizes=Counter(), composition={}))

    assert "untagged" not in (tmp_path / "README.md").read_text()
    assert "## Clusters" not in (bare / "README.md").read_text()


def test_empty_selection_still_yields_a_valid_card(tmp_path: Path) -> None:
    card = _card(
        tmp_path,
        files=_export(tmp_path, []),
        composition={},
        selected_quality=[],
        cluster_sizes=Counter(),
        report={"candidates": 6, "selected": 0},
    )

    written = write_card(tmp_path, card)

    assert written == [Path("README.md"), Path("images/quality.svg")]
    _svg(tmp_path / "images" / "quality.svg")
    data = DatasetCard.load(tmp_path / "README.md").data
    assert data.size_categories == ["n<1K"]
    # No format has records: every Parquet file is still a config, so the Hub never guesses.
    for config in data.to_dict()["configs"]:
        assert (tmp_path / config["data_files"][0]["path"]).is_file()
    assert "0 records chosen" in (tmp_path / "README.md").read_text()


def test_card_without_any_scores_or_files_has_no_images(tmp_path: Path) -> None:
    card = CardInput(job_id="job-0", name="")

    written = write_card(tmp_path / "card", card)

    assert written == [Path("README.md")]
    readme = (tmp_path / "card" / "README.md").read_text()
    assert "No quality scores were recorded." in readme
    data = DatasetCard.load(tmp_path / "card" / "README.md").data
    assert data.pretty_name == "job-0" and data.license == "other"
    assert data.language is None
