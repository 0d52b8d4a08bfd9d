"""A job's selection settings with defaults by job kind, and where path imports may read."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.selector.spec import SelectionDefaults, selection_spec
from taxoforge.errors import PermanentError
from taxoforge.selection import EXPORT_FORMATS
from taxoforge.v1 import common_pb2 as pb


def test_generated_data_clusters_by_node_and_ranks_by_the_judge_with_the_recipe_budget() -> None:
    spec = selection_spec(pb.Job(kind="generate", recipe=pb.Recipe(budget=7, seed=3)))

    assert (spec.method, spec.cluster_by, spec.scoring) == ("tacos", "node", "judge")
    assert (spec.budget, spec.budget_unit, spec.quota, spec.seed) == (
        7,
        "records",
        "proportional",
        3,
    )
    assert list(spec.exports) == list(EXPORT_FORMATS)
    assert "tacos" not in spec.compare and "deita" in spec.compare


def test_imported_data_is_tagged_and_scored_comparatively() -> None:
    spec = selection_spec(pb.Job(kind="select", recipe=pb.Recipe(budget=7)))

    assert (spec.cluster_by, spec.scoring) == ("tags", "comparative")
    assert spec.budget == 0  # Recipe.budget is a generation setting
    assert (spec.min_tag_frequency, spec.tag_merge_threshold, spec.ngram) == (2, 0.85, 10)


def test_without_a_budget_deita_is_measured_only_when_asked_for() -> None:
    unasked = selection_spec(pb.Job(kind="select"))
    asked = selection_spec(
        pb.Job(kind="select", recipe=pb.Recipe(selection=pb.SelectionSpec(compare=["deita"])))
    )

    assert "deita" not in unasked.compare and "random" in unasked.compare
    assert list(asked.compare) == ["deita"]


def test_what_the_job_says_wins_over_defaults() -> None:
    given = pb.SelectionSpec(method="random", cluster_by="embedding", quota="sqrt", seed=9)
    spec = selection_spec(pb.Job(kind="generate", recipe=pb.Recipe(seed=1, selection=given)))

    assert (spec.method, spec.cluster_by, spec.quota, spec.seed) == (
        "random",
        "embedding",
        "sqrt",
        9,
    )
    assert "tacos" in spec.compare and "random" not in spec.compare


def test_path_imports_are_refused_without_roots(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("{}\n")

    with pytest.raises(PermanentError, match="TAXOFORGE_IMPORT_ROOTS"):
        SelectionDefaults().allowed_path(str(tmp_path / "a.jsonl"))


def test_a_path_must_be_a_file_under_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    defaults = SelectionDefaults(import_roots=(str(root),))

    assert defaults.allowed_path(str(root / "a.jsonl")) == (root / "a.jsonl").resolve()
    with pytest.raises(PermanentError, match="outside the import roots"):
        defaults.allowed_path(str(root / ".." / "b.jsonl"))
    with pytest.raises(PermanentError, match="not a file"):
        defaults.allowed_path(str(root / "missing.jsonl"))
