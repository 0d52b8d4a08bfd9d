"""Smoke test on the REAL embedded model: SmolLM2-135M-Instruct under llama-cpp-python."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from taxoforge.cli import download
from taxoforge.stack import EMBEDDED_MODEL, Stack, StackConfig

from .jobs import submit, wait

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def test_the_quickstart_runs_on_the_embedded_model(tmp_path: Path) -> None:
    config = StackConfig(data_dir=tmp_path / "stack", llm="embedded", sync_always=False)
    with Stack(config) as stack, httpx.Client(base_url=stack.gateway_url, timeout=60) as api:
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
        assert report["judged"] + report["failed"] == 3
        assert report["judged"] >= 1
        paths = download(stack.gateway_url, job, tmp_path / "out")

    sft = [json.loads(line) for line in paths[0].read_text().splitlines()]
    preference = [json.loads(line) for line in paths[1].read_text().splitlines()]
    assert paths[0].name == "sft.jsonl" and paths[1].name == "preference.jsonl"
    assert len(sft) == report["sft_records"] == report["judged"]
    assert len(preference) == report["preference_records"]
    for record in sft:
        assert record["messages"][0]["content"].strip()
        assert record["messages"][1]["content"].strip()
        assert record["metadata"]["response_model"] == EMBEDDED_MODEL
    for record in preference:
        assert record["score_chosen"] > record["score_rejected"]
    # Every call reached the real model server and was counted.
    assert job["usage"]["calls"] >= 3 * 5 - 2 * report["failed"]
    assert job["usage"]["completion_tokens"] > 0
    assert (tmp_path / "out" / "summary.json").exists()
