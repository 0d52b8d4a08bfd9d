"""Crashes mid-job: the job still finishes, with every item judged exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES, FakeControl
from .jobs import item_counts, records, stages, submit, wait

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
