"""A job through the whole suite as real processes: gateway, NATS, four services, FAKE model."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest

from taxoforge.bus import Bus, Stage, work_subject
from taxoforge.bus.topology import DLQ_STREAM, dlq_subject
from taxoforge.settings import BusSettings
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb
from taxoforge.v1 import taxonomy_pb2_grpc
from taxoforge_cli.stack import Stack

from .conftest import FakeControl
from .jobs import (
    delivered,
    item_counts,
    records,
    stages,
    submit,
    wait,
    wait_for_stage,
    wait_queues_idle,
)

pytestmark = pytest.mark.integration


def test_a_job_runs_end_to_end(stack: Stack, api: httpx.Client, fake: FakeControl) -> None:
    generator_messages = delivered(stack.nats_url, "generator")
    # No replacement seeds (max_candidates 1): the counts below are the plan's alone.
    job = submit(api, name="e2e", count=12, languages=["en", "fr"], seed=3, max_candidates=1.0)
    assert job["state"] in ("pending", "running") and job["id"].startswith("j-")
    job = wait(api, job["id"])

    assert job["state"] == "succeeded", job
    assert job["planned"] == job["finished"] == 12
    assert stages(job) == {
        "plan": (1, 0),
        "instruct": (12, 0),
        "respond": (12, 0),
        "judge": (12, 0),
        # Generated data is clustered by taxonomy node and ranked by its judge scores: no tag
        # or compare calls.
        "prepare": (1, 0),
        "tag": (0, 0),
        "cluster": (1, 0),
        "compare": (0, 0),
        "select": (1, 0),
    }
    # 12 instructions, 2 responses each, 2 rubric scores each.
    assert job["usage"]["calls"] == 12 * 5
    assert job["selection"]["usage"]["calls"] == 12 * 5
    assert job["usage"]["prompt_tokens"] > 0

    sft = records(api, job["id"], "sft")
    assert len(sft) == 12 == job["selection"]["sft_records"]
    assert len({r["id"] for r in sft}) == 12
    for record in sft:
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert all(m["content"] for m in record["messages"])
        assert record["metadata"]["language"] in {"en", "fr"}
    quality = [r["provenance"]["quality"] for r in sft]
    assert quality == sorted(quality, reverse=True)  # best first
    languages = [r["metadata"]["language"] for r in sft]
    assert languages.count("en") == languages.count("fr") == 6

    preference = records(api, job["id"], "preference")
    assert len(preference) == job["selection"]["preference_records"]
    assert len(preference) + job["selection"].get("ties", 0) == 12
    for record in preference:
        assert record["prompt"][0]["role"] == "user"
        assert record["chosen"][0]["role"] == record["rejected"][0]["role"] == "assistant"
        assert record["score_chosen"] - record["score_rejected"] >= 1

    counts = item_counts(stack.nats_url, job["id"])
    assert counts["outcome"] == counts["judgment"] == counts["instruction"] == 12
    assert counts["response"] == counts["score"] == 24
    # Depth first: the message that wrote an instruction made its candidates too, so the
    # generator was sent one message an item and no respond message.
    assert delivered(stack.nats_url, "generator") - generator_messages == 12


def test_candidates_that_cannot_be_made_fail_at_the_respond_stage(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    """The instruct message's attempt at the candidates fails; the respond stage gets the
    instruction, tries again on its own message and records the failure as its own."""
    fake.configure(fail_pattern="You are a knowledgeable, careful assistant", fail_status=400)
    generator_messages = delivered(stack.nats_url, "generator")

    job = wait(api, submit(api, count=3, seed=5, max_candidates=1.0)["id"])

    assert job["state"] == "failed"
    assert "every item failed; most often at respond" in job["error"]
    assert job["selection"]["failures_by_stage"] == {"respond": 3}
    assert stages(job)["instruct"] == (3, 0) and stages(job)["respond"] == (0, 3)
    # Each item: its instruct message, then one respond message (a 400 is not retried).
    assert delivered(stack.nats_url, "generator") - generator_messages == 6


def test_the_budget_keeps_the_best(api: httpx.Client, fake: FakeControl) -> None:
    job = wait(api, submit(api, count=10, budget=4, min_margin=0)["id"])
    assert job["state"] == "succeeded"
    sft = records(api, job["id"], "sft")
    assert len(sft) == 4
    assert job["selection"]["over_budget"] >= 6


def _plan_seeds(stack: Stack, **recipe: Any) -> list[pb.Seed]:
    """The seeds a recipe will get (plans are deterministic), from the taxonomy service."""

    async def plan() -> list[pb.Seed]:
        async with grpc.aio.insecure_channel(stack.grpc_addr("taxonomy")) as channel:
            stub = taxonomy_pb2_grpc.TaxonomyServiceStub(channel)
            resp = await stub.PlanJob(
                tpb.PlanJobRequest(
                    recipe=pb.Recipe(taxonomy_id="starter", **recipe), include_seeds=True
                )
            )
            return list(resp.seeds)

    return asyncio.run(plan())


def test_redelivered_messages_do_not_repeat_work(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    """A stage's message delivered again after its result exists calls no model, adds nothing."""
    seeds = _plan_seeds(stack, count=4, seed=21, languages=[pb.LanguageShare(code="en", share=1)])
    held = seeds[0].node_title  # its item stays in the judge, so the job keeps running
    finished = [s.item_id for s in seeds if s.node_title != held]
    fake.configure(slow_pattern=f"Its topic: {held} (", slow_ms=4000)
    job_id = submit(api, count=4, seed=21, max_candidates=1.0)["id"]
    wait_for_stage(api, job_id, "judge", len(finished))

    async def redeliver() -> None:
        bus = await Bus.connect(BusSettings(nats_url=stack.nats_url), name="test-redeliver")
        try:
            items = ItemStore(bus)
            for item in finished:
                instruction = await items.get(
                    ItemStore.key(job_id, ItemKind.INSTRUCTION, item), pb.Instruction
                )
                candidates = await items.get(
                    ItemStore.key(job_id, ItemKind.CANDIDATES, item), pb.Candidates
                )
                assert instruction is not None and candidates is not None
                headers = {"TF-Job-Id": job_id, "TF-Item-Id": item}
                # New message ids, so JetStream's dedup does not hide them: as a redelivery.
                for stage, body in (
                    (Stage.INSTRUCT, instruction.seed),
                    (Stage.RESPOND, instruction),
                    (Stage.JUDGE, candidates),
                ):
                    await bus.publish(work_subject(stage), body, f"again.{item}.{stage}", headers)
        finally:
            await bus.close()

    asyncio.run(redeliver())
    # Every redelivered message handled and acked while the held item still works: the job was
    # running, so nothing was skipped as belonging to a finished job.
    wait_queues_idle(stack.nats_url, in_flight=1)
    assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "running"

    job = wait(api, job_id)
    assert job["state"] == "succeeded"
    stats: dict[str, Any] = fake.stats()
    assert stats["calls"] == 4 * 5
    assert max(stats["by_request"].values()) == 1, "the same request was made twice"
    counts = item_counts(stack.nats_url, job_id)
    assert counts["outcome"] == counts["judgment"] == counts["instruction"] == 4
    assert counts["response"] == counts["score"] == 8
    assert len({r["id"] for r in records(api, job_id, "sft")}) == 4


def test_a_message_that_always_fails_is_dead_lettered_and_reported(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    plan = api.post("/v1/plans", json={"count": 30, "seed": 11}).json()
    failing = sum(c["count"] for c in plan["cells"] if c["node_id"] == "philosophy")
    assert failing > 0
    fake.configure(fail_pattern="Its topic: Philosophy (", fail_status=500)

    async def dead_letters_before() -> int:
        bus = await Bus.connect(BusSettings(nats_url=stack.nats_url), name="test-dlq")
        try:
            info = await bus.js.stream_info(DLQ_STREAM, subjects_filter=dlq_subject(Stage.INSTRUCT))
            return int((info.state.subjects or {}).get(dlq_subject(Stage.INSTRUCT), 0))
        finally:
            await bus.close()

    before = asyncio.run(dead_letters_before())
    job = wait(api, submit(api, count=30, seed=11, max_candidates=1.0)["id"])

    assert job["state"] == "succeeded"
    assert stages(job)["instruct"] == (30 - failing, failing)
    assert stages(job)["judge"] == (30 - failing, 0)
    assert job["finished"] == 30
    assert job["selection"]["failed"] == failing
    assert job["selection"]["failures_by_stage"] == {"instruct": failing}
    reason = job["selection"]["failure_reasons"][0]
    assert reason["stage"] == "instruct" and "HTTP 500" in reason["reason"]
    assert reason["items"] == failing
    assert len(records(api, job["id"], "sft")) == 30 - failing
    assert asyncio.run(dead_letters_before()) - before == failing


def test_a_job_whose_items_all_fail_ends_failed_with_the_reason(
    api: httpx.Client, fake: FakeControl
) -> None:
    fake.configure(fail_pattern="Grade the answer", fail_status=500)
    job = wait(api, submit(api, count=3)["id"])
    assert job["state"] == "failed"
    assert "every item failed; most often at judge" in job["error"]
    assert job["selection"]["judged"] == 0


def test_a_cancelled_job_stops(stack: Stack, api: httpx.Client, fake: FakeControl) -> None:
    fake.configure(slow_pattern="Grade the answer", slow_ms=2000)
    job = submit(api, count=6)
    wait_for_stage(api, job["id"], "respond", 1)
    resp = api.post(f"/v1/jobs/{job['id']}:cancel")
    assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
    wait_queues_idle(stack.nats_url)
    calls = fake.stats()["calls"]
    job = wait(api, job["id"])
    assert job["state"] == "cancelled" and job["datasets"] == []
    assert fake.stats()["calls"] == calls, "work went on after the queues drained"
    again = api.post(f"/v1/jobs/{job['id']}:cancel")
    assert again.status_code == 200  # cancelling twice is harmless
    assert api.get(f"/v1/jobs/{job['id']}/datasets/sft").status_code == 409


def test_an_idempotency_key_returns_the_same_job(api: httpx.Client, fake: FakeControl) -> None:
    recipe = {"count": 2, "name": "idem"}
    first = api.post("/v1/jobs", json=recipe, headers={"Idempotency-Key": "abc-123"})
    second = api.post("/v1/jobs", json=recipe, headers={"Idempotency-Key": "abc-123"})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    other = api.post("/v1/jobs", json={"count": 3}, headers={"Idempotency-Key": "abc-123"})
    assert other.status_code == 409
    wait(api, first.json()["id"])
