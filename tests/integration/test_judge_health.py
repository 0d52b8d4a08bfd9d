"""Every judge call of a job counts in its usage and its judge health, whatever asked for it:
a golden set of any size (judged in batches), TACOS comparisons in a selection job; and the
comparison budget is a ceiling on judge calls, retries of invalid replies included.

The FAKE judge scores answers by their "[quality: N]" markers, so its preference is known."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from .conftest import FakeControl
from .jobs import submit, wait
from .test_selection import planted_rows, select, to_jsonl, upload

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

GOOD = "The tilt of the axis makes the sun's rays fall more steeply in summer. [quality: 80]"
POOR = "It is because the Earth is closer to the sun in summer. [quality: 50]"


def _served_equals_usage(api: httpx.Client, fake: FakeControl, job_id: str) -> dict[str, Any]:
    """The job's usage once it counts every call the model served; fails if it never does."""
    deadline = time.monotonic() + 5
    while True:
        served = int(fake.stats()["calls"])  # type: ignore[call-overload]
        usage: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()["usage"]
        if usage["calls"] == served or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert usage["calls"] == served, f"the model served {served} calls, the job counts {usage}"
    return usage


def _kappa(predicted: list[str], labels: list[str]) -> float:
    n = len(labels)
    observed = sum(p == t for p, t in zip(predicted, labels, strict=True)) / n
    pred, true = Counter(predicted), Counter(labels)
    expected = sum(pred[k] * true[k] for k in set(pred) | set(true)) / (n * n)
    return (observed - expected) / (1 - expected)


def test_a_golden_set_of_500_pairs_is_judged_and_reported(
    api: httpx.Client, fake: FakeControl
) -> None:
    golden, truth = [], []
    for i in range(500):
        good_first = i % 3 != 0
        a, b = (GOOD, POOR) if good_first else (POOR, GOOD)
        preferred = "a" if good_first else "b"
        truth.append(preferred)
        if i % 10 == 0:  # every tenth label is wrong: the judge agrees with 90%
            preferred = "b" if preferred == "a" else "a"
        question = f"Why are there seasons on Earth? (variant {i})"
        golden.append({"instruction": question, "a": a, "b": b, "preferred": preferred})
    labels = [g["preferred"] for g in golden]

    job = submit(
        api, count=2, seed=7311, languages=["en"], judging={"mode": "pairwise", "golden": golden}
    )
    job = wait(api, job["id"], limit_s=240)
    assert job["state"] == "succeeded", job
    health = job["selection"]["judge"]
    assert health["golden_pairs"] == 500
    assert health.get("golden_failures", 0) == 0 and not health.get("golden_error")
    assert health["golden_accuracy"] == pytest.approx(0.9, abs=1e-4)
    assert health["golden_kappa"] == pytest.approx(_kappa(truth, labels), abs=1e-4)
    # The golden pairs' calls (both orders each) are the judge's and the job's: health counts
    # them with the items' own comparisons (both orders each), usage counts every call.
    items = health["comparisons"] - 500
    assert items >= 2  # at least the two items' pairs of candidates
    assert health["calls"] == 2 * (500 + items), health | {"histogram": None}
    assert sum(health["histogram"].values()) == 4 * (500 + items)
    usage = _served_equals_usage(api, fake, job["id"])
    assert usage["calls"] >= health["calls"] + 2 * 3  # and each item's instruction, answers


def test_a_selection_jobs_judge_health_shows_its_comparisons(
    api: httpx.Client, fake: FakeControl
) -> None:
    fake.configure(position_bias=40)  # the first shown answer gains 40: orders disagree
    rows, _ = planted_rows(seed=11)
    job = select(
        api, {"upload": upload(api, "health.jsonl", to_jsonl(rows))}, budget=10, clusters=5
    )
    assert job["state"] == "succeeded", job
    tacos, health = job["selection"]["tacos"], job["selection"]["judge"]
    assert tacos["comparisons"] > 0
    assert health["comparisons"] == tacos["comparisons"]
    assert health["calls"] == 2 * tacos["comparisons"]  # both orders, nothing asked again
    assert health["inconsistent"] > 0
    assert health["swap_disagreement_rate"] == pytest.approx(
        health["inconsistent"] / health["comparisons"], abs=1e-4
    )
    assert sum(health["histogram"].values()) == 4 * tacos["comparisons"]
    usage = _served_equals_usage(api, fake, job["id"])
    # Every call served was a tag or a comparison, and each is counted once.
    assert usage["calls"] - health["calls"] >= tacos["tagged"]


def test_the_comparison_budget_is_never_exceeded_by_retried_invalid_replies(
    api: httpx.Client, fake: FakeControl
) -> None:
    # Every comparison reply has no rationale: invalid, asked again until its calls are spent.
    fake.configure(
        replies=[
            [
                "as training data for a helpful assistant",
                '{"rationale": "][", "score_1": 60, "score_2": 40}',
            ]
        ]
    )
    rows, _ = planted_rows(seed=12)
    budget = 20
    job = select(
        api,
        {"upload": upload(api, "budget.jsonl", to_jsonl(rows))},
        budget=10,
        clusters=5,
        comparison_budget=budget,
    )
    assert job["state"] == "succeeded", job
    tacos, health = job["selection"]["tacos"], job["selection"]["judge"]
    usage = _served_equals_usage(api, fake, job["id"])
    # The calls the fake served for comparisons: all but the tagger's.
    compare_calls = usage["calls"] - tacos["tagged"]
    assert 0 < compare_calls <= budget
    assert health["calls"] == compare_calls
    assert health["invalid_replies"] == compare_calls  # every reply was refused
    # Fewer comparisons planned, each with room for a retry: 20 // 3 = 6, at 3 calls each.
    assert tacos["planned_comparisons"] == 6 and tacos["calls_per_comparison"] == 3
    assert tacos["comparison_failures"] == 6 and health["judge_failures"] == 6
    assert str(budget) in tacos["budget_rule"]
