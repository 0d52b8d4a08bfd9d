"""The select step's choice of records, without a bus: scores applied, methods run and
measured, records ordered and explained."""

from __future__ import annotations

import json
from pathlib import Path

from services.selector.choice import (
    apply_clusters,
    apply_comparisons,
    choose,
    explain,
    export_order,
    methods_of,
    not_kept,
    provenance,
)
from services.selector.examples import Candidate, Example, load_examples
from taxoforge.v1 import common_pb2 as pb


def _cands(n: int = 6) -> list[Candidate]:
    return [
        Candidate(item_id=f"i{i}", query=f"q{i}", response_chars=i + 1, tokens=10) for i in range(n)
    ]


def _spec(**fields: object) -> pb.SelectionSpec:
    spec = pb.SelectionSpec(
        method="tacos",
        budget=2,
        budget_unit="records",
        quota="proportional",
        seed=7,
        diversity_threshold=0.9,
        score_threshold=90.0,
    )
    for key, value in fields.items():
        setattr(spec, key, value)
    return spec


def test_the_work_file_is_read_with_each_lines_offset(tmp_path: Path) -> None:
    path = tmp_path / "examples.jsonl"
    rows = [{"item_id": f"i{i}", "query": "q", "response": "r", "tokens": 3} for i in range(2)]
    lines = [json.dumps(r) + "\n" for r in rows]
    path.write_text(lines[0] + "\n" + lines[1], encoding="utf-8")
    loaded = load_examples(path)
    assert [c.item_id for c in loaded.candidates] == ["i0", "i1"]
    assert loaded.offsets == [0, len(lines[0]) + 1]


def test_comparisons_score_samples_and_their_reference_gets_the_mean() -> None:
    cands = _cands(4)
    comparisons = [
        pb.Comparison(a_id="i1", b_id="i0", a=80.0, b=40.0),
        pb.Comparison(a_id="i2", b_id="i0", a=30.0, b=60.0),
        pb.Comparison(a_id="i3", b_id="i0", a=99.0, b=1.0, failed=True),
    ]
    out = apply_comparisons(cands, comparisons)
    assert out.failed == 1 and len(out.by_item) == 3
    assert [c.comparative for c in cands] == [50.0, 80.0, 30.0, None]


def test_the_job_method_chooses_and_every_method_is_measured() -> None:
    cands = _cands()
    apply_clusters(cands, {"assignment": [0, 0, 0, 1, 1, 1], "tags": [["a"]] * 6})
    for c, score in zip(cands, [90, 80, 70, 60, 50, 40], strict=True):
        c.judge_score = float(score)
    spec = _spec()
    spec.compare.extend(["score", "tacos", "longest"])
    assert methods_of(spec) == ["tacos", "score", "longest"]
    choice = choose(spec, cands, None)
    assert choice.chosen == [0, 3]  # the best of each cluster
    assert choice.quota_by_cluster == {0: (1, 1), 1: (1, 1)}
    assert [m.method for m in choice.measures] == ["tacos", "score", "longest"]
    by_method = {m.method: m for m in choice.measures}
    assert by_method["tacos"].clusters == 2 and by_method["score"].clusters == 1
    assert by_method["longest"].mean_response_chars == 5.5


def test_records_are_exported_best_first_and_say_why_they_were_kept() -> None:
    cands = _cands(3)
    apply_clusters(cands, {"assignment": [0, 0, 0], "tags": [[], [], []]})
    cands[1].judge_score, cands[2].judge_score = 70.0, 95.0
    assert export_order([0, 1, 2], cands) == [2, 1, 0]
    quotas = {0: (2, 2)}
    why = explain("tacos", [2, 1], cands, ["maths"], quotas)
    assert why[2] == "tacos: 1st of 3 in cluster 0 (maths), quota 2; quality 95.0"
    assert why[1] == "tacos: 2nd of 3 in cluster 0 (maths), quota 2; quality 70.0"
    assert not_kept("tacos", 0, cands, ["maths"], quotas) == (
        "tacos: below the quota (2) of cluster 0 (maths); no score"
    )
    assert not_kept("random", 0, cands, ["maths"], {}) == (
        "random: not selected within the budget; no score"
    )


def test_provenance_names_the_reference_a_record_was_compared_with() -> None:
    cands = _cands(2)
    apply_clusters(cands, {"assignment": [0, 0], "tags": [["t"], ["t"]]})
    comparisons = apply_comparisons(
        cands, [pb.Comparison(a_id="i1", b_id="i0", a=70.0, b=50.0, inconsistent=True)]
    )
    example: Example = {  # type: ignore[typeddict-item]
        "id": "x/i1",
        "item_id": "i1",
        "shape": "messages",
        "tokens": 10,
        "row": 2,
        "metadata": {"source_id": "s"},
    }
    record = provenance(example, cands[1], "t", ["i0"], comparisons, "kept")
    assert record["comparative"]["reference_id"] == "i0"
    assert record["comparative"]["inconsistent"] is True
    assert record["row"] == 2 and record["cluster_label"] == "t"
    reference = provenance({**example, "item_id": "i0"}, cands[0], "t", ["i0"], comparisons, "")  # type: ignore[typeddict-item]
    assert reference["comparative"] == {"reference_of_cluster": 0, "score": 50.0}
