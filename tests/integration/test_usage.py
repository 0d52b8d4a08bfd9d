"""A job's usage counts every model call it paid for (a repeat after a failure, a golden set
judged over gRPC) and reports replies served from the request cache apart; judge work that
comes back is answered from the cache instead of paying again."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from .conftest import FakeControl
from .jobs import stages, submit, wait

pytestmark = pytest.mark.integration

GOOD = "The tilt of the axis makes the sun's rays fall more steeply in summer. [quality: 80]"
POOR = "It is because the Earth is closer to the sun in summer. [quality: 50]"
QUESTION = "Why are there seasons on Earth?"


def _usage_once_written(api: httpx.Client, fake: FakeControl, job_id: str) -> dict[str, Any]:
    """The job's usage once it counts every call the model served (processes write their
    tokens within a second); fails if it never does."""
    deadline = time.monotonic() + 5
    while True:
        served = int(fake.stats()["calls"])  # type: ignore[call-overload]
        usage: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()["usage"]
        if usage["calls"] == served or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert usage["calls"] == served, f"the model served {served} calls, the job counts {usage}"
    return usage


def test_a_jobs_calls_are_what_the_model_served_and_cached_replies_are_apart(
    api: httpx.Client, fake: FakeControl
) -> None:
    recipe = {"count": 4, "seed": 7301, "languages": ["en"], "max_candidates": 1.0}
    first = wait(api, submit(api, **recipe)["id"])
    assert first["state"] == "succeeded", first
    usage = _usage_once_written(api, fake, first["id"])
    assert usage["cached_calls"] == 0
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0

    fake.reset()
    second = wait(api, submit(api, **recipe)["id"])
    assert second["state"] == "succeeded", second
    usage = _usage_once_written(api, fake, second["id"])
    # Instructions and responses (4 + 8) came from the cache: nothing paid, counted apart.
    # The judge asked anew (another job's markers make other prompts).
    assert usage["cached_calls"] == 12
    assert usage["calls"] == 8


def test_judge_work_that_comes_back_is_answered_from_the_cache(
    api: httpx.Client, fake: FakeControl
) -> None:
    # Pairwise judging: each item's two orders are asked at once and stored only together.
    # The order showing the better answer first fails once, so the item's message comes back;
    # the other order had been answered and paid for, and must not be paid for again.
    fake.configure(
        quality_by_temperature=[[0.3, 80], [1.0, 40]],
        fail_pattern="[quality: 80]\\n<</answer-1-",  # as it appears in the JSON request
        fail_times=1,
    )
    count = 4
    job = submit(api, count=count, seed=7302, languages=["en"], judging={"mode": "pairwise"})
    job = wait(api, job["id"])
    assert job["state"] == "succeeded", job
    assert stages(job)["judge"] == (count, 0)

    stats = fake.stats()
    assert stats["failed"] == count, stats
    usage = _usage_once_written(api, fake, job["id"])  # the failed calls were sent: counted
    assert usage["cached_calls"] == count  # one order per item, from the cache
    # Only the failed requests were sent twice; every answered one was sent once.
    sent = Counter(stats["by_request"].values())  # type: ignore[union-attr]
    assert sent[2] == count and set(sent) == {1, 2}, sent


def test_a_golden_set_judged_for_a_job_counts_in_its_usage(
    api: httpx.Client, fake: FakeControl
) -> None:
    golden = [
        {"instruction": QUESTION, "a": GOOD, "b": POOR, "preferred": "a"},
        {"instruction": QUESTION, "a": POOR, "b": GOOD, "preferred": "b"},
    ]
    job = submit(
        api,
        count=2,
        seed=7303,
        languages=["en"],
        judging={"mode": "pairwise", "golden": golden},
        max_candidates=1.0,
    )
    job = wait(api, job["id"])
    assert job["state"] == "succeeded", job
    assert job["selection"]["judge"]["golden_pairs"] == 2
    usage = _usage_once_written(api, fake, job["id"])
    # 2 items x (1 instruction + 2 responses + 2 orders), and the golden pairs' 2 x 2 orders
    assert usage["calls"] == 2 * 5 + 2 * 2
