"""Every item a job plans or imports ends in the exports or in ``meta/dropped.jsonl``, with the
stage that left it out and why, whatever failed, and however few records are kept; and
``/records/{item}`` answers for each one."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import grpc
import httpx
import pytest

from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb
from taxoforge.v1 import taxonomy_pb2_grpc
from taxoforge_cli.stack import Stack

from .conftest import FakeControl
from .jobs import jsonl, submit, wait

pytestmark = pytest.mark.integration

# A canned instruction for every Chemistry seed: the second one is a duplicate (a gate
# failure), and the judge's replies about the first are never JSON (no valid score).
_CHEMISTRY = (
    "Explain how catalysts and enzymes in the kitchen speed up the chemical reactions of "
    "baking bread, with two everyday examples."
)
_COUNTS = {"physics": 3, "chemistry": 2, "history": 2, "philosophy": 2}


def _plan(stack: Stack, **recipe: Any) -> dict[str, str]:
    """Item id -> taxonomy node id of the seeds a recipe gets (plans are deterministic)."""

    async def plan() -> dict[str, str]:
        async with grpc.aio.insecure_channel(stack.grpc_addr("taxonomy")) as channel:
            stub = taxonomy_pb2_grpc.TaxonomyServiceStub(channel)
            resp = await stub.PlanJob(
                tpb.PlanJobRequest(
                    recipe=pb.Recipe(taxonomy_id="starter", **recipe), include_seeds=True
                )
            )
            return {s.item_id: s.node_id for s in resp.seeds}

    return asyncio.run(plan())


def _ledger(api: httpx.Client, job: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The ids the exports keep and the drops, both read from the job's files; the dropped
    listing is one of them, whatever was dropped."""
    paths = {d["path"] for d in job["datasets"]}
    assert {"meta/provenance.jsonl", "meta/dropped.jsonl"} <= paths, paths
    kept = [p["item_id"] for p in jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")]
    lines = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    for drop in lines:
        assert drop["stage"] and drop["reason"] and drop["id"] == f"{job['id']}/{drop['item_id']}"
    # Drafts and candidates the gates discarded are listed too, each with its gate.
    discarded = [d for d in lines if "candidate" in d]
    for line in discarded:
        assert line["reason"] == "rejected_candidate" and line["gate"], line
    return kept, [d for d in lines if "candidate" not in d]


def _record(api: httpx.Client, job_id: str, item: str) -> dict[str, Any]:
    resp = api.get(f"/v1/jobs/{job_id}/records/{item}")
    assert resp.status_code == 200, resp.text
    record: dict[str, Any] = resp.json()
    return record


def test_a_generation_job_with_failures_lists_every_item_it_did_not_keep(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    recipe: dict[str, Any] = {"count": sum(_COUNTS.values()), "seed": 5, "node_counts": _COUNTS}
    planned = _plan(
        stack,
        count=recipe["count"],
        seed=5,
        node_counts=[pb.NodeCount(node_id=k, count=v) for k, v in _COUNTS.items()],
        distribution="weight",
        languages=[pb.LanguageShare(code="en", share=1)],
    )
    assert Counter(planned.values()) == _COUNTS
    fake.configure(
        fail_pattern="Its topic: Philosophy (",  # dead-lettered after every delivery fails
        replies=[
            ["Its topic: History (", "I'm sorry, I cannot help with that request."],
            ["Its topic: Chemistry (", _CHEMISTRY],
        ],
        malformed_pattern="catalysts and enzymes in the kitchen",
    )
    # The default budget (0: keep everything), so the select step itself drops nothing.
    job = wait(
        api, submit(api, **recipe, instruction_attempts=1, max_candidates=1.0)["id"], limit_s=120
    )
    assert job["state"] == "succeeded", job
    assert job["selection"]["failed"] == 5

    kept, dropped = _ledger(api, job)
    ids = [d["item_id"] for d in dropped]
    assert len(ids) == len(set(ids)) and not set(kept) & set(ids)
    assert set(kept) | set(ids) == set(planned)
    assert {planned[i] for i in kept} == {"physics"} and len(kept) == 3

    for drop in dropped:  # each names its plan cell, whatever stage it left at
        assert drop["node_id"] == planned[drop["item_id"]], drop
        assert drop["node"] and drop["language"] == "en", drop

    by_node: dict[str, list[dict[str, Any]]] = {}
    for drop in dropped:
        by_node.setdefault(planned[drop["item_id"]], []).append(drop)
    for drop in by_node["philosophy"]:
        assert (drop["stage"], drop["reason"]) == ("instruct", "failed")
        assert "HTTP 500" in drop["detail"] and drop["deliveries"] >= 1
    for drop in by_node["history"]:
        assert (drop["stage"], drop["reason"]) == ("instruct", "failed")
        assert "quality gates" in drop["detail"] and "refused" in drop["detail"]
    assert sorted((d["stage"], d["reason"]) for d in by_node["chemistry"]) == [
        ("instruct", "failed"),
        ("judge", "unusable"),
    ]

    item = by_node["philosophy"][0]["item_id"]
    record = _record(api, job["id"], item)
    assert record["status"] == "dropped" and record["stage"] == "instruct"
    assert _record(api, job["id"], kept[0])["status"] == "kept"


def test_a_job_that_keeps_no_record_still_lists_every_item(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    # No judge reply is ever JSON: every item is judged with no valid score, none is kept.
    fake.configure(malformed_pattern="Grade the answer")
    job = wait(api, submit(api, count=4, seed=6, max_candidates=1.0)["id"], limit_s=120)
    # Nothing delivered: not a success, but the folder lists every item.
    assert job["state"] == "failed" and "delivered no records" in job["error"], job
    assert job["selection"]["sft_records"] == 0

    kept, dropped = _ledger(api, job)
    assert kept == []
    assert sorted(d["item_id"] for d in dropped) == [f"i{n:07d}" for n in range(4)]
    assert {(d["stage"], d["reason"]) for d in dropped} == {("judge", "unusable")}
    record = _record(api, job["id"], dropped[0]["item_id"])
    assert record["status"] == "dropped" and record["detail"] == "no response with a valid score"


def test_a_job_whose_items_all_fail_lists_them_with_its_failure(
    api: httpx.Client, fake: FakeControl
) -> None:
    fake.configure(fail_pattern="Grade the answer", fail_status=500)
    job = wait(api, submit(api, count=3, seed=7, max_candidates=1.0)["id"])
    assert job["state"] == "failed" and "every item failed" in job["error"]

    assert [d["path"] for d in job["datasets"]] == ["meta/dropped.jsonl"]
    dropped = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    assert sorted(d["item_id"] for d in dropped) == [f"i{n:07d}" for n in range(3)]
    assert {(d["stage"], d["reason"]) for d in dropped} == {("judge", "failed")}
    assert _record(api, job["id"], "i0000001")["stage"] == "judge"
    # The exports never existed.
    assert api.get(f"/v1/jobs/{job['id']}/datasets/sft").status_code == 409


_QUESTIONS = [
    "Why do tides rise twice a day along the Atlantic coast?",
    "How should I store fresh basil so it keeps for a week?",
    "What makes a violin sound different from a viola?",
    "Which exercises strengthen the lower back safely?",
    "How did medieval castles get fresh water during a siege?",
]


def _row(n: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"{_QUESTIONS[n - 1]} [tags: misc]"},
            {"role": "assistant", "content": f"Answer {n}. [quality: {40 + n}]"},
        ]
    }


def _select(api: httpx.Client, data: bytes, **selection: Any) -> dict[str, Any]:
    upload = api.post("/v1/uploads", params={"name": "rows.jsonl"}, content=data)
    assert upload.status_code == 201, upload.text
    source = {"upload": upload.json()["upload"]}
    resp = api.post("/v1/selections", json={"source": source, "selection": selection})
    assert resp.status_code == 201, resp.text
    return wait(api, resp.json()["id"], limit_s=120)


def test_a_selection_lists_its_malformed_rows_with_no_budget(
    api: httpx.Client, fake: FakeControl
) -> None:
    lines = [json.dumps(_row(n)) for n in range(1, 6)]
    lines.insert(2, "{not json")  # row 3
    lines.insert(4, "")  # a blank line is no row, but still counts in the numbering
    lines.append(json.dumps(_row(1)))  # row 8: a duplicate of row 1
    rows = {f"r{n:07d}" for n, line in enumerate(lines, 1) if line}
    job = _select(api, ("\n".join(lines) + "\n").encode(), clusters=1)
    assert job["state"] == "succeeded", job
    assert job["selection"]["imported"]["rows"] == len(rows) == 7

    kept, dropped = _ledger(api, job)
    ids = [d["item_id"] for d in dropped]
    assert set(kept) | set(ids) == rows and not set(kept) & set(ids)
    assert sorted((d["item_id"], d["row"], d["stage"], d["reason"]) for d in dropped) == [
        ("r0000003", 3, "import", "malformed"),
        ("r0000008", 8, "dedup", "duplicate"),
    ]
    record = _record(api, job["id"], "r0000003")
    assert record["status"] == "dropped" and record["row"] == 3


def test_a_selection_with_no_valid_row_fails_and_lists_every_row(
    api: httpx.Client, fake: FakeControl
) -> None:
    job = _select(api, b'{"foo": 1}\n{"messages": []}\n')
    assert job["state"] == "failed" and "row 1" in job["error"]
    dropped = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/dropped.jsonl")
    assert [(d["row"], d["stage"], d["reason"]) for d in dropped] == [
        (1, "import", "malformed"),
        (2, "import", "malformed"),
    ]
    assert _record(api, job["id"], "r0000002")["status"] == "dropped"
