"""Exactly the dataset asked for: every plan cell (node x language x difficulty x task type)
filled to its target through replacement seeds, a budget met with the plan's own cells, and a
job that cannot fill its plan saying which cells are short and why, against the FAKE model."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES, FakeControl
from .jobs import item_counts, jsonl, records, stages, submit, wait

pytestmark = pytest.mark.integration

_LANGUAGES = [
    {"code": "en", "share": 0.5},
    {"code": "fr", "share": 0.25},
    {"code": "de", "share": 0.25},
]


def _cells(records_: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter(
        (r["metadata"]["node_id"], r["metadata"]["language"], r["metadata"]["difficulty"])
        for r in records_
    )


def _planned(job: dict[str, Any]) -> Counter[tuple[str, str, str]]:
    return Counter(
        {
            (c["node"], c["language"], c["difficulty"]): c["planned"]
            for c in job["composition"]["cells"]
        }
    )


def test_a_budget_keeps_the_plans_shape_languages_included(
    api: httpx.Client, fake: FakeControl
) -> None:
    job = submit(
        api, count=24, budget=12, languages=_LANGUAGES, difficulties=["easy", "hard"], seed=3
    )
    job = wait(api, job["id"], limit_s=180)
    assert job["state"] == "succeeded" and not job["short"], job
    sft = records(api, job["id"], "sft")
    assert Counter(r["metadata"]["language"] for r in sft) == {"en": 6, "fr": 3, "de": 3}
    assert Counter(r["metadata"]["difficulty"] for r in sft) == {"easy": 6, "hard": 6}
    composition = job["composition"]
    assert composition["planned"] == 12 and composition["sft"] == 12
    # The quotas are over joint cells, and the datasets hold each exactly.
    assert _cells(sft) == +_planned(job)
    assert composition["preference_promised"]
    assert len(records(api, job["id"], "preference")) == composition["preference"] == 12


def test_a_cell_that_cannot_fill_is_reported_short_with_its_reason(
    api: httpx.Client, fake: FakeControl
) -> None:
    # Every German draft comes back in English: German cells can never fill.
    fake.configure(wrong_language_pattern="German")
    job = submit(
        api,
        count=16,
        languages=_LANGUAGES,
        instruction_attempts=1,
        max_candidates=1.5,
        seed=4,
        selection={"exports": ["sft"]},
    )
    job = wait(api, job["id"], limit_s=180)
    assert job["state"] == "succeeded" and job["short"], job
    composition = job["composition"]
    assert not composition["preference_promised"]
    assert composition["candidates"] == job["planned"] == 24  # 16 x 1.5: the budget, spent
    assert "candidate budget spent" in composition["stopped"]
    short = composition["short_cells"]
    assert short and {c["language"] for c in short} == {"de"}
    for cell in short:
        assert cell["sft"] == 0 and cell["candidates"] >= cell["planned"]
        assert cell["reasons"].get("gate:wrong_language", 0) >= 1, cell
        assert cell["reasons"].get("failed:instruct", 0) == cell["candidates"]
    # Every other cell is exactly full, and the exports hold what the composition says.
    for cell in composition["cells"]:
        if cell["language"] != "de":
            assert cell["sft"] == cell["planned"], cell
    sft = records(api, job["id"], "sft")
    assert len(sft) == composition["sft"] == 12
    # Every item tried is exported or listed, replacements included.
    kept = {p["item_id"] for p in jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")}
    lines = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    dropped = [d["item_id"] for d in lines if "candidate" not in d]
    assert not kept & set(dropped)
    assert kept | set(dropped) == {f"i{n:07d}" for n in range(job["planned"])}


def test_a_job_that_delivers_nothing_is_not_a_success(api: httpx.Client, fake: FakeControl) -> None:
    fake.configure(wrong_language_pattern="French")
    job = submit(
        api,
        count=3,
        languages=[{"code": "fr", "share": 1.0}],
        instruction_attempts=1,
        max_candidates=1.0,
        seed=5,
    )
    job = wait(api, job["id"], limit_s=120)
    assert job["state"] == "failed", job
    assert job["short"] is False and job["composition"]["short"], job
    paths = {d["path"] for d in job["datasets"]}
    assert "meta/dropped.jsonl" in paths, paths
    lines = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    dropped = [d for d in lines if "candidate" not in d]
    assert sorted(d["item_id"] for d in dropped) == ["i0000000", "i0000001", "i0000002"]
    # Each item's turned-down draft is listed with its gate.
    drafts = [d for d in lines if "candidate" in d]
    assert {d["gate"] for d in drafts} == {"wrong_language"} and len(drafts) == 3


def _exact(api: httpx.Client, job: dict[str, Any], kinds: tuple[str, ...]) -> None:
    """Every cell holds exactly its plan, in every promised dataset, and the files agree."""
    assert job["state"] == "succeeded" and not job["short"], job
    planned = _planned(job)
    for kind in kinds:
        got = records(api, job["id"], kind)
        assert len({r["id"] for r in got}) == len(got)  # no record twice
        assert _cells(got) == +planned, kind


@pytest.mark.parametrize("budget", [0, 120])
def test_a_fifth_of_degraded_drafts_still_fills_every_cell_exactly(
    api: httpx.Client, fake: FakeControl, budget: int
) -> None:
    fake.configure(degrade_fraction=0.2)
    job = submit(
        api,
        count=200,
        budget=budget,
        languages=_LANGUAGES,
        difficulties=["easy", "hard"],
        seed=21 + budget,
    )
    job = wait(api, job["id"], limit_s=600)
    _exact(api, job, ("sft", "preference"))
    composition = job["composition"]
    assert composition["planned"] == (budget or 200)
    assert composition["sft"] == composition["preference"] == composition["planned"]
    assert composition["rounds"] >= 1 and job["planned"] > 200  # failures were replaced
    # Every discarded candidate is listed with its gate; every item is kept or listed.
    lines = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    gates = Counter(d["gate"] for d in lines if "candidate" in d)
    assert gates and all(g.isidentifier() for g in gates), gates
    assert set(gates) & {"echo", "empty", "wrong_language", "mixed_language", "prompt_leak"}
    kept = {p["item_id"] for p in jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")}
    dropped = {d["item_id"] for d in lines if "candidate" not in d}
    assert not kept & dropped
    assert kept | dropped == {f"i{n:07d}" for n in range(job["planned"])}


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Stack]:
    """Two generators and two judges, each working a few items at a time, on a slow model."""
    config = StackConfig(
        data_dir=tmp_path / "stack",
        llm="fake",
        sync_always=False,
        env=dict(FAST_RETRIES),
        service_env={
            "generator": {"TAXOFORGE_WORKER_CONCURRENCY": "4"},
            "judge": {"TAXOFORGE_WORKER_CONCURRENCY": "4"},
        },
    )
    with Stack(config) as stack:
        stack.add_replica("generator")
        stack.add_replica("judge")
        yield stack


def test_killed_replicas_leave_every_cell_exactly_full_and_nothing_twice(
    replicated: Stack,
) -> None:
    stack = replicated
    fake = FakeControl(stack.llm_api_base)
    fake.configure(degrade_fraction=0.2, latency_ms=40)
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        job_id = submit(
            api, count=48, languages=_LANGUAGES, difficulties=["easy", "hard"], seed=77
        )["id"]
        deadline = time.monotonic() + 120
        while stages(api.get(f"/v1/jobs/{job_id}").json())["judge"][0] < 8:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # SIGKILL mid-job: their in-flight messages come back after ack_wait, to the others.
        stack.kill("generator-2")
        stack.kill("judge-2")
        job = wait(api, job_id, limit_s=300)
        _exact(api, job, ("sft", "preference"))
        counts = item_counts(stack.nats_url, job_id)
        assert counts["outcome"] == job["planned"]  # every item ended once
        assert job["composition"]["sft"] == job["composition"]["preference"] == 48
