"""Smoke test on the REAL embedded model: SmolLM2-135M-Instruct under llama-cpp-python."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taxoforge_cli.main import download
from taxoforge_cli.stack import EMBEDDED_MODEL, Stack, StackConfig

from .jobs import submit, wait

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack on the embedded model server (llama-cpp-python running SmolLM2-135M)."""
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("embedded"), llm="embedded", sync_always=False
    )
    with Stack(config) as stack:
        yield stack


def test_the_quickstart_runs_on_the_embedded_model(embedded: Stack, tmp_path: Path) -> None:
    stack = embedded
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as api:
        job_id = submit(
            api,
            name="smoke",
            count=3,
            languages=["en"],
            seed=1,
            models={
                "generator": {"max_tokens": 96},
                "responders": [
                    {"temperature": 0.2, "max_tokens": 128},
                    {"temperature": 1.1, "max_tokens": 128},
                ],
            },
        )["id"]
        job = wait(api, job_id, limit_s=600)
        assert job["state"] == "succeeded", job
        report = job["selection"]
        # The plan's 3 items and any replacement seeds for cells they left short.
        assert report["judged"] + report["failed"] == job["planned"] >= 3
        assert job["composition"]["planned"] == 3
        assert report["judged"] >= 1
        paths = download(stack.gateway_url, job, tmp_path / "out")

    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    out = tmp_path / "out"
    assert {p.name for p in paths} >= {"sft.jsonl", "preference.jsonl"}
    sft, preference = read(out / "data" / "sft.jsonl"), read(out / "data" / "preference.jsonl")
    provenance = {p["id"]: p for p in read(out / "meta" / "provenance.jsonl")}
    # At most the plan's 3 (one per cell), whatever replacements were judged.
    assert len(sft) == report["sft_records"] == job["composition"]["sft"] <= 3
    assert len(preference) == report["preference_records"]
    for record in sft:
        assert record["messages"][0]["content"].strip()
        assert record["messages"][1]["content"].strip()
        assert provenance[record["id"]]["metadata"]["response_model"] == EMBEDDED_MODEL
    assert (out / "README.md").read_text().startswith("---\n")
    for record in preference:
        assert record["score_chosen"] > record["score_rejected"]
    # Every call reached the real model server and was counted.
    assert job["usage"]["calls"] >= 3 * 5 - 2 * report["failed"]
    assert job["usage"]["completion_tokens"] > 0
    assert (tmp_path / "out" / "summary.json").exists()


def _find(node: dict[str, Any], node_id: str) -> dict[str, Any]:
    if node["id"] == node_id:
        return node
    for child in node.get("children", []):
        found = _find(child, node_id)
        if found:
            return found
    return {}


def test_glan_expansion_runs_on_the_embedded_model(embedded: Stack) -> None:
    """A discipline gets subjects, then one subject gets a syllabus, from the real model."""
    with httpx.Client(base_url=embedded.gateway_url, timeout=60) as api:
        # The built-in is read-only: expand a copy of it under an id of our own.
        document = api.get("/v1/taxonomies/starter/export").text.replace(
            "id: starter\n", "id: my-starter\n", 1
        )
        copied = api.post(
            "/v1/taxonomies", content=document, headers={"content-type": "application/yaml"}
        )
        assert copied.status_code == 201, copied.text
        subjects_job = api.post(
            "/v1/taxonomies/my-starter:expand",
            json={"nodes": ["chemistry"], "samples": 2, "max_children": 3},
        )
        assert subjects_job.status_code == 201, subjects_job.text
        job = wait(api, subjects_job.json()["id"], limit_s=600)
        assert job["state"] == "succeeded", job
        chemistry = _find(api.get("/v1/taxonomies/my-starter").json()["root"], "chemistry")
        subjects = chemistry["children"]
        assert 1 <= len(subjects) <= 3
        assert all(s["status"] == "NODE_STATUS_PROPOSED" and s["title"].strip() for s in subjects)

        first = subjects[0]["id"]
        review = api.post("/v1/taxonomies/my-starter:review", json={"accept": [first]})
        assert review.status_code == 200, review.text
        syllabus_job = api.post(
            "/v1/taxonomies/my-starter:expand",
            json={"nodes": [first], "min_sessions": 2, "max_sessions": 4},
        )
        job = wait(api, syllabus_job.json()["id"], limit_s=600)
        assert job["state"] == "succeeded", job
        subject = _find(api.get("/v1/taxonomies/my-starter").json()["root"], first)
        sessions = subject["children"]
        assert 1 <= len(sessions) <= 4
        assert all(s["kind"] == "session" and s["title"].strip() for s in sessions)
        assert all(s["attributes"]["key_concepts"]["items"] for s in sessions)
