"""Crashes mid-job: the job still finishes, with every item judged exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES, FakeControl
from .jobs import item_counts, records, stages, submit, wait, wait_for_stage

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_judge_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose judge works two items at a time, so a job spends seconds in judging."""
    config = StackConfig(
        data_dir=tmp_path / "stack",
        llm="fake",
        sync_always=False,
        env=dict(FAST_RETRIES),
        service_env={"judge": {"TAXOFORGE_WORKER_CONCURRENCY": "2"}},
    )
    stack = Stack(config)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def test_killing_the_judge_mid_job_loses_and_duplicates_nothing(slow_judge_stack: Stack) -> None:
    stack = slow_judge_stack
    fake = FakeControl(stack.llm_api_base)
    fake.configure(slow_pattern="Grade the answer", slow_ms=300)
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        job_id = submit(api, count=16, seed=5, max_candidates=1.0)["id"]
        deadline = time.monotonic() + 60
        while stages(api.get(f"/v1/jobs/{job_id}").json())["judge"][0] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        stack.kill("judge")  # SIGKILL: no drain, its in-flight messages are never acked
        judged_at_kill = stages(api.get(f"/v1/jobs/{job_id}").json())["judge"][0]
        assert judged_at_kill < 16, "the judge finished before it could be killed"
        time.sleep(1.0)
        assert stages(api.get(f"/v1/jobs/{job_id}").json())["judge"][0] == judged_at_kill
        stack.start_service("judge")  # its unacked messages come back after ack_wait

        job = wait(api, job_id, limit_s=120)
        assert job["state"] == "succeeded", job
        assert stages(job)["judge"] == (16, 0)
        assert job["finished"] == 16
        counts = item_counts(stack.nats_url, job_id)
        assert counts["outcome"] == counts["judgment"] == 16
        assert counts["score"] == 32
        sft = records(api, job_id, "sft")
        assert sorted(r["id"] for r in sft) == sorted({r["id"] for r in sft})
        assert len(sft) == 16
        # Every call the model served is charged, those the killed judge had in flight too
        # (each is counted before it is sent). At most the four it may have counted and not
        # yet sent (two items, two scores each) are charged without reaching the model.
        deadline = time.monotonic() + 5
        while True:
            served = int(fake.stats()["calls"])  # type: ignore[call-overload]
            charged = int(api.get(f"/v1/jobs/{job_id}").json()["usage"]["calls"])
            if served <= charged <= served + 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert served <= charged <= served + 4, f"model served {served}, job charged {charged}"


def test_a_restarted_service_picks_up_queued_work(slow_judge_stack: Stack) -> None:
    """Work queued while a service is down waits in JetStream and is done when it returns."""
    stack = slow_judge_stack
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        stack.stop_process("generator")  # SIGTERM: drains and leaves
        job_id = submit(api, count=5, max_candidates=1.0)["id"]
        time.sleep(2.0)
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "running" and stages(job)["instruct"] == (0, 0)
        stack.start_service("generator")
        job = wait(api, job_id, limit_s=60)
        assert job["state"] == "succeeded"
        assert stages(job)["judge"] == (5, 0)


def test_killing_the_selector_mid_tagging_tags_every_row_once(tmp_path: Path) -> None:
    """Tags are stored a page at a time: a page the killed selector had in hand is tagged
    again on redelivery, no page is stored twice, and every row ends tagged."""
    config = StackConfig(
        data_dir=tmp_path / "stack",
        llm="fake",
        sync_always=False,
        env=dict(FAST_RETRIES),
        service_env={"selector": {"TAXOFORGE_WORKER_CONCURRENCY": "1"}},  # a page at a time
    )
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}: how do I {topic}?"},
                {"role": "assistant", "content": f"Answer {i}: you {topic} step by step."},
            ]
        }
        for i, topic in enumerate(
            f"{verb} the {noun} number {n}"
            for n in range(20)
            for verb, noun in (
                ("sort", "list"),
                ("parse", "file"),
                ("plot", "chart"),
                ("test", "module"),
                ("cache", "page"),
                ("merge", "table"),
                ("sign", "token"),
                ("scale", "cluster"),
                ("tune", "model"),
                ("read", "stream"),
            )
        )
    ]
    with Stack(config) as stack, httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        fake = FakeControl(stack.llm_api_base)
        fake.configure(slow_pattern="open-domain tags", slow_ms=1500)
        data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
        resp = api.post("/v1/uploads", params={"name": "rows.jsonl"}, content=data)
        assert resp.status_code == 201, resp.text
        resp = api.post(
            "/v1/selections",
            json={
                "name": "killed",
                "source": {"upload": resp.json()["upload"]},
                "selection": {"budget": 20, "cluster_by": "tags", "comparison_budget": 0},
            },
        )
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]
        wait_for_stage(api, job_id, "tag", done=1, limit_s=60)

        stack.kill("selector")  # SIGKILL: the page in hand is never acked
        at_kill = stages(api.get(f"/v1/jobs/{job_id}").json())["tag"][0]
        assert at_kill < 4, "tagging ended before the selector could be killed"
        stack.start_service("selector")

        job = wait(api, job_id, limit_s=120)
        assert job["state"] == "succeeded", job
        tacos = job["selection"]["tacos"]
        assert job["selection"]["candidates"] == 200
        assert tacos["tagged"] == 200 and tacos.get("tag_failures", 0) == 0
        assert stages(job)["tag"] == (4, 0)  # pages of 64, 64, 64 and 8
        assert item_counts(stack.nats_url, job_id)["tags"] == 4
