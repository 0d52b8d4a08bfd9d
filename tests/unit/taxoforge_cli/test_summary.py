"""What the CLI says it wrote is what the job's folder holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taxoforge_cli.client import console
from taxoforge_cli.main import print_summary


def _job(state: str, *paths: str) -> dict[str, Any]:
    return {
        "id": "j-1",
        "name": "demo",
        "state": state,
        "stages": [{"stage": "judge", "done": 2, "failed": 1}],
        "usage": {"calls": 3, "prompt_tokens": 30, "completion_tokens": 9, "cost_usd": 0.0},
        "error": "every item failed" if state == "failed" else "",
        "datasets": [{"path": p} for p in paths],
    }


def _summary(job: dict[str, Any], paths: list[Path], out: Path) -> str:
    width = console.width
    console.width = 1000  # long paths on one line
    try:
        with console.capture() as captured:
            print_summary(job, paths, out)
    finally:
        console.width = width
    return " ".join(captured.get().split())


def test_the_summary_names_the_files_the_job_has(tmp_path: Path) -> None:
    job = _job("succeeded", "README.md", "data/sft.jsonl", "meta/provenance.jsonl")
    text = _summary(job, [tmp_path / "data" / "sft.jsonl"], tmp_path)
    assert "README.md (dataset card), data/ (1 formats" in text
    assert "meta/provenance.jsonl" in text and "dropped" not in text

    job["datasets"].append({"path": "meta/dropped.jsonl"})
    assert "meta/dropped.jsonl" in _summary(job, [tmp_path / "data" / "sft.jsonl"], tmp_path)


def test_a_failed_job_with_its_drops_says_only_that(tmp_path: Path) -> None:
    text = _summary(_job("failed", "meta/dropped.jsonl"), [], tmp_path)
    assert f"wrote {tmp_path}: meta/dropped.jsonl" in text
    assert "README" not in text and "data/" not in text
    assert "wrote" not in _summary(_job("cancelled"), [], tmp_path)
