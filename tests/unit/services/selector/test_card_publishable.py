"""The dataset folder is publishable: imported data is called imported, benchmarks carry the
names their tenant gave, an empty export is still loadable, the cluster chart stays readable
with many clusters, and a generation job's plan is set against what was delivered."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from services.selector.card import (
    MAX_CLUSTER_BARS,
    CardInput,
    benchmark_name,
    cluster_bars,
    write_card,
)
from services.selector.exports import SCHEMAS, ExportWriter


def _card(out: Path, **fields: Any) -> CardInput:
    with ExportWriter(out, ["sft", "preference"]) as writer:
        pass
    base: dict[str, Any] = {"job_id": "sel-1", "name": "Mine", "files": writer.close()}
    return CardInput(**(base | fields))


def _readme(out: Path, card: CardInput) -> str:
    write_card(out, card)
    return (out / "README.md").read_text(encoding="utf-8")


def _header(readme: str) -> dict[str, Any]:
    header: dict[str, Any] = yaml.safe_load(readme.split("---\n")[1])
    return header


def test_imported_data_is_called_imported_not_synthetic(tmp_path: Path) -> None:
    report = {"candidates": 5, "selected": 2, "imported": {"name": "train.jsonl", "rows": 5}}
    readme = _readme(tmp_path, _card(tmp_path, report=report))

    assert "imported from `train.jsonl`" in readme
    assert "ynthetic" not in readme and "generated" not in readme
    assert "synthetic" not in _header(readme)["tags"]


def test_generated_data_is_still_called_synthetic(tmp_path: Path) -> None:
    readme = _readme(tmp_path, _card(tmp_path, report={"candidates": 5, "selected": 2}))

    assert "Synthetic fine-tuning data generated" in readme
    assert "synthetic" in _header(readme)["tags"]


def test_benchmarks_are_named_without_the_tenant_prefix(tmp_path: Path) -> None:
    card = _card(
        tmp_path,
        report={"contaminated": {"acme~mt-bench": 3}, "imported": {"name": "x.jsonl"}},
        settings={"selection": {"decontaminate": ["acme~mt-bench", "acme~gsm8k"]}},
    )
    readme = _readme(tmp_path, card)

    assert "acme~" not in readme and "acme" not in readme
    assert "Contaminated (mt-bench) removed" in readme
    assert "- mt-bench\n  - gsm8k" in readme or "- mt-bench\n- gsm8k" in readme
    assert benchmark_name("gsm8k") == "gsm8k"


def test_an_export_with_no_records_is_loadable_and_the_card_says_so(tmp_path: Path) -> None:
    readme = _readme(tmp_path, _card(tmp_path))

    table = pq.read_table(tmp_path / "data" / "preference.parquet")
    assert table.num_rows == 0 and table.schema.equals(SCHEMAS["preference"])
    assert pq.read_table(tmp_path / "data" / "sft.parquet").num_rows == 0
    assert (tmp_path / "data" / "sft.jsonl").read_bytes() == b""
    assert "No record went to `sft`, `preference`" in readme
    assert "empty but loadable" in readme


def _svg_size(path: Path) -> tuple[float, float]:
    root = ET.parse(path).getroot()
    return float(root.get("width", 0)), float(root.get("height", 0))


def test_many_clusters_chart_the_largest_and_group_the_rest(tmp_path: Path) -> None:
    sizes = Counter({f"cluster label number {i} " + "x" * 80: 500 - i for i in range(300)})
    selected = Counter(dict.fromkeys(sizes, 1))
    bars = cluster_bars(sizes, selected)

    assert len(bars) == MAX_CLUSTER_BARS + 1
    assert bars[0][1] == 500 and bars[-1][0] == f"other ({300 - MAX_CLUSTER_BARS} clusters)"
    assert sum(b[1] for b in bars) == sum(sizes.values())
    assert sum(b[2] for b in bars) == 300
    assert all(len(b[0]) <= 40 for b in bars)

    card = _card(tmp_path, cluster_sizes=sizes, composition={"cluster": selected})
    write_card(tmp_path, card)
    width, height = _svg_size(tmp_path / "images" / "clusters.svg")
    # Horizontal bars, one label a row: at least 30 px a bar, whatever the count.
    assert height >= 30 * len(bars) and width <= 1000


def _report(cells: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    composition = {"cells": cells, "preference_promised": True, **extra}
    return {"candidates": 20, "selected": 14, "composition": composition}


def test_plan_vs_delivered_shows_totals_per_dimension_and_short_cells(tmp_path: Path) -> None:
    cells = [
        {"node_id": "n1", "language": "en", "planned": 4, "sft": 4, "preference": 4},
        {
            "node_id": "n1",
            "language": "fr",
            "planned": 2,
            "sft": 2,
            "preference": 1,
            "candidates": 5,
            "reasons": {"no_pair": 1},
        },
        {"node_id": "n2", "language": "en", "planned": 4, "sft": 4, "preference": 4},
        {
            "node_id": "n2",
            "language": "de",
            "planned": 2,
            "sft": 0,
            "preference": 0,
            "candidates": 6,
            "reasons": {"gate:wrong_language": 4, "failed:instruct": 2},
        },
    ]
    report = _report(
        cells,
        short=True,
        planned=12,
        sft=10,
        preference=9,
        max_candidates=24,
        candidates=22,
        rounds=2,
        stopped="candidate budget spent",
    )
    readme = _readme(tmp_path, _card(tmp_path, report=report))

    section = readme[readme.index("## Plan vs delivered") :]
    assert "Planned 12 records; delivered 10 SFT records and 9 preference pairs" in section
    assert "2 of 4 cells are short" in section
    assert (
        "candidate budget spent" in section and "22 candidates generated of at most 24" in section
    )
    assert "| en | 8 | 8 | 8 |" in section
    assert "| de | 2 | 0 | 0 |" in section
    assert "| n1 | 6 | 6 | 5 |" in section
    short = section[section.index("### Short cells") :]
    assert "| n2 | de | 2 | 0 | 0 | 6 | gate:wrong_language: 4, failed:instruct: 2 |" in short
    assert "| n1 | fr | 2 | 2 | 1 | 5 | no_pair: 1 |" in short
    assert "| n1 | en |" not in short


def test_a_full_plan_says_so_and_a_selection_job_has_no_plan_section(tmp_path: Path) -> None:
    cells = [{"language": "en", "planned": 3, "sft": 3, "preference": 3}]
    readme = _readme(tmp_path / "full", _card(tmp_path / "full", report=_report(cells)))
    assert "Every one of the 1 cells is full." in readme and "### Short cells" not in readme
    assert "### Taxonomy node" not in readme  # a dimension the recipe does not control

    readme = _readme(tmp_path / "sel", _card(tmp_path / "sel", report={"composition": {}}))
    assert "Plan vs delivered" not in readme
