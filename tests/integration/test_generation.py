"""Generation as the methods describe it, through the whole suite, against the FAKE model:
strategies, languages, quality gates, the shared request cache, and k candidates per item."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taxoforge.bus import Bus
from taxoforge.settings import BusSettings
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb
from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES, FakeControl
from .jobs import records, submit, wait

pytestmark = pytest.mark.integration


async def _scan(nats_url: str, job_id: str, kind: ItemKind, message: Any) -> list[Any]:
    bus = await Bus.connect(BusSettings(nats_url=nats_url), name="test-scan")
    try:
        return [m async for m in ItemStore(bus).scan(job_id, kind, message)]
    finally:
        await bus.close()


def test_strategies_and_languages_are_planned_and_recorded(
    api: httpx.Client, fake: FakeControl
) -> None:
    job = submit(
        api,
        count=24,
        taxonomy="knowledge",
        languages=["en", "fr"],
        strategies=["glan", "tap", "codeclm"],
        task_types="all",
        difficulties=["easy", "hard"],
        rubric_rounds=2,
        seed=8,
        max_candidates=1.0,  # the plan as planned: no replacements for pairs that tie
    )
    job = wait(api, job["id"], limit_s=120)
    assert job["state"] == "succeeded", job
    report = job["selection"]
    assert report["by_strategy"] == {"glan": 8, "tap": 8, "codeclm": 8}
    assert report["by_language"] == {"en": 12, "fr": 12}

    sft = records(api, job["id"], "sft")
    assert Counter(r["metadata"]["strategy"] for r in sft) == {"glan": 8, "tap": 8, "codeclm": 8}
    for record in sft:
        meta = record["metadata"]
        assert meta["instruction_template"] == f"{meta['strategy']}@1" or (
            meta["strategy"] == "codeclm" and meta["instruction_template"] == "codeclm_decode@1"
        )
        assert len(meta["instruction_prompt_sha256"]) == 64
        if meta["strategy"] == "glan":
            assert 1 <= len(meta["glan_concepts"]) <= 5
            assert 1 <= len(meta["glan_sessions"]) <= 2
        if meta["strategy"] == "codeclm":
            assert meta["codeclm_use_case"] and meta["codeclm_skills"]
            assert [r["round"] for r in meta["rubric_rounds"]] == [1, 2]
            assert all(r["action"] for r in meta["rubric_rounds"])
        if meta["strategy"] == "tap":
            assert meta["task_type"]


def test_wrong_language_drafts_are_caught_and_written_again(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    # Every prompt asking for French is first answered in English, then in French.
    fake.configure(wrong_language_pattern="in French", wrong_language_times=1)
    job = wait(api, submit(api, count=6, languages=["en", "fr"], seed=3)["id"])
    assert job["state"] == "succeeded" and not job["short"], job
    report = job["selection"]
    # Every French draft is turned down once; a French item that still fails (its two
    # candidates race for the one prompt the fake answers wrongly once) is replaced, and so is
    # any item whose candidates the fake judge tied (no pair): more items than planned may be
    # judged, the records below are exactly the plan.
    assert report["by_language"]["en"] >= 3 and report["by_language"]["fr"] >= 3
    assert report["rejections"]["wrong_language"] >= 3
    assert report["rejections"]["response_wrong_language"] >= 3
    sft = records(api, job["id"], "sft")
    assert Counter(r["metadata"]["language"] for r in sft) == {"en": 3, "fr": 3}
    for record in sft:
        drafts = record["metadata"]["rejected_drafts"]
        if record["metadata"]["language"] == "en":
            assert drafts == []
        else:  # a replacement's prompt may have been answered wrongly already (once each)
            assert drafts in ([], ["wrong_language"]), drafts
    responses = asyncio.run(_scan(stack.nats_url, job["id"], ItemKind.RESPONSE, pb.Response))
    assert all(r.language_ok for r in responses)


def test_duplicate_instructions_are_dropped_and_reported(
    api: httpx.Client, fake: FakeControl
) -> None:
    # Every instruction prompt gets the same answer: one item keeps it, the others cannot.
    fake.configure(replies=[["Its topic:", "What is the boiling point of water at sea level?"]])
    job = wait(api, submit(api, count=3, instruction_attempts=2, seed=4, max_candidates=1.0)["id"])
    assert job["state"] == "succeeded", job
    report = job["selection"]
    assert report["judged"] == 1 and report["failed"] == 2
    assert report["failures_by_stage"] == {"instruct": 2}
    assert report["rejections"]["duplicate"] == 2 * 2
    assert "duplicate" in report["failure_reasons"][0]["reason"]
    assert len(records(api, job["id"], "sft")) == 1


def test_near_duplicates_are_caught_too(api: httpx.Client, fake: FakeControl) -> None:
    base = (
        "Explain in careful detail, step by step and with a labelled diagram, how the four "
        "chambers and the valves of the human heart pump blood through the lungs and the body of a"
    )
    fake.configure(
        replies=[
            ["(Natural Sciences", f"{base} healthy adult during hard exercise?"],
            ["(Formal Sciences", f"{base} healthy adult during light exercise?"],
        ]
    )
    job = wait(
        api,
        submit(
            api,
            count=2,
            nodes=["physics", "mathematics"],
            instruction_attempts=1,
            max_candidates=1.0,
        )["id"],
    )
    report = job["selection"]
    assert report["judged"] == 1 and report["rejections"] == {"near_duplicate": 1}
    off = api.post(
        "/v1/jobs",
        json={
            "count": 2,
            "nodes": ["physics", "mathematics"],
            "near_duplicate": 0,
            "max_candidates": 1.0,
        },
    ).json()
    assert wait(api, off["id"])["selection"]["judged"] == 2


def test_k_candidates_and_the_target_reach_the_judge(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    # The target (0.9) writes far worse than the responders (the default 0.7), so contrastive
    # filtering keeps every instruction: with the fake's unmarked scores a gap within 3 sends
    # an instruction back until its rounds run out, and a job of 3 could end with none.
    fake.configure(quality_by_temperature=[[0.7, 90], [0.9, 30]])
    job = submit(
        api,
        count=3,
        responses_per_instruction=3,
        contrastive=True,
        models={"target": {"temperature": 0.9}},
        max_candidates=1.0,
    )
    job = wait(api, job["id"])
    assert job["state"] == "succeeded", job
    judgments = asyncio.run(_scan(stack.nats_url, job["id"], ItemKind.JUDGMENT, pb.Judgment))
    assert len(judgments) == 3
    for judgment in judgments:
        ids = sorted(r.id.rsplit(".", 1)[-1] for r in judgment.responses)
        assert ids == ["r0", "r1", "r2", "t"]
        assert len(judgment.scores) == 4
        target = next(r for r in judgment.responses if r.id.endswith(".t"))
        assert target.responder == -1


@pytest.fixture
def two_generators(tmp_path: Path) -> Iterator[Stack]:
    config = StackConfig(
        data_dir=tmp_path / "stack", llm="fake", sync_always=False, env=dict(FAST_RETRIES)
    )
    with Stack(config) as stack:
        stack.add_replica("generator")
        yield stack


def test_the_request_cache_is_shared_by_replicas(two_generators: Stack) -> None:
    stack = two_generators
    fake = FakeControl(stack.llm_api_base)
    recipe = {"count": 4, "seed": 12, "languages": ["en"], "max_candidates": 1.0}
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        first = wait(api, submit(api, **recipe)["id"])
        assert first["state"] == "succeeded"
        assert fake.stats()["calls"] == 4 * 5

        # The replica that answered the first job leaves; the other gets every message now.
        stack.stop_process("generator")
        fake.reset()
        second = wait(api, submit(api, **recipe)["id"])
        assert second["state"] == "succeeded"
        # Instructions and responses came from the cache; only the judge (whose prompts carry a
        # fresh nonce each time) called the model.
        assert fake.stats()["calls"] == 4 * 2
        assert second["selection"]["usage"]["calls"] == 4 * 2
        instructions = asyncio.run(
            _scan(stack.nats_url, second["id"], ItemKind.INSTRUCTION, pb.Instruction)
        )
        assert all(i.call.cached for i in instructions)
        texts = {r["messages"][0]["content"] for r in records(api, first["id"], "sft")}
        assert texts == {r["messages"][0]["content"] for r in records(api, second["id"], "sft")}

        fake.reset()
        third = wait(api, submit(api, **recipe, cache=False)["id"])
        assert third["state"] == "succeeded"
        assert fake.stats()["calls"] == 4 * 5
