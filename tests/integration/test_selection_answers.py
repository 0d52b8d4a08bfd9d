"""Benchmarks are read or refused, and a dataset with two answers per prompt is selected on
quality (real NATS, gRPC, services; the FAKE judge scores answers by their "[quality: N]")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from taxoforge_cli.main import main
from taxoforge_cli.stack import Stack

from .conftest import FakeControl
from .jobs import jsonl, wait

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

# MT-Bench's question.jsonl: each question's prompts sit under "turns".
MT_BENCH = [
    {
        "question_id": 81,
        "category": "writing",
        "turns": [
            "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting "
            "cultural experiences and must-see attractions.",
            "Rewrite your previous response. Start every sentence with the letter A.",
        ],
    },
    {
        "question_id": 111,
        "category": "math",
        "turns": [
            "The vertices of a triangle are at points (0, 0), (-1, 1), and (3, 3). What is the "
            "area of the triangle?",
            "What's area of the circle circumscribing the triangle?",
        ],
    },
]
TOPICS = [
    "photosynthesis in desert cacti",
    "how tides follow the moon",
    "why volcanoes form island chains",
    "the water cycle over mountains",
    "how vaccines train the immune system",
    "why leaves change colour in autumn",
    "how bees find their way home",
    "what makes thunder after lightning",
]


def _jsonl_bytes(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _select(api: httpx.Client, data: bytes, **selection: Any) -> dict[str, Any]:
    resp = api.post("/v1/uploads", params={"name": "answers.jsonl"}, content=data)
    assert resp.status_code == 201, resp.text
    source = {"upload": resp.json()["upload"]}
    resp = api.post(
        "/v1/selections", json={"name": "answers", "source": source, "selection": selection}
    )
    assert resp.status_code == 201, resp.text
    return wait(api, resp.json()["id"], limit_s=120)


def test_benchmark_add_registers_turns_and_refuses_a_file_without_prompts(
    stack: Stack, api: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    question = tmp_path / "question.jsonl"
    question.write_bytes(_jsonl_bytes(MT_BENCH))
    main(["benchmark", "add", "mt-bench", str(question), "--gateway", stack.gateway_url])
    assert "registered mt-bench (4 prompts" in capsys.readouterr().err

    unreadable = tmp_path / "scores.jsonl"
    unreadable.write_bytes(_jsonl_bytes([{"qid": 1, "score": 9.5}, {"qid": 2, "score": 3.0}]))
    with pytest.raises(SystemExit):
        main(["benchmark", "add", "mt-bench", str(unreadable), "--gateway", stack.gateway_url])
    err = " ".join(capsys.readouterr().err.split())
    assert "422" in err and "'qid'" in err and "'score'" in err and "turns" in err

    resp = api.put("/v1/benchmarks/scores", content=unreadable.read_bytes())
    assert resp.status_code == 422
    assert "no prompt found" in resp.json()["error"]["message"]
    names = {b["name"] for b in api.get("/v1/benchmarks").json()["benchmarks"]}
    assert "mt-bench" in names and "scores" not in names
    # The refused file did not replace the registered one.
    kept = api.get("/v1/benchmarks/mt-bench")
    assert kept.status_code == 200 and kept.content == question.read_bytes()


def test_two_answers_per_prompt_keep_the_one_the_judge_prefers(
    api: httpx.Client, fake: FakeControl
) -> None:
    rows: list[dict[str, Any]] = []
    quality: dict[str, int] = {}
    for i, topic in enumerate(TOPICS):
        prompt = f"Explain {topic} to a curious twelve year old. [tags: science]"
        better = (f"A careful explanation of {topic}, step by step. [quality: {80 + i}]", 80 + i)
        worse = (f"Nobody really knows; {topic} is magic. [quality: {15 + i}]", 15 + i)
        # Half the prompts give the worse answer first: keeping a prompt's first answer
        # (dedup on the query) would keep those.
        for text, q in (better, worse) if i % 2 == 0 else (worse, better):
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": text},
                    ]
                }
            )
            quality[f"r{len(rows):07d}"] = q
    # A record that holds an MT-Bench turn: registered as above, it is found.
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "Quiz: " + MT_BENCH[1]["turns"][0]},
                {"role": "assistant", "content": "It is 3. [quality: 99]"},
            ]
        }
    )
    resp = api.put("/v1/benchmarks/mt-bench", content=_jsonl_bytes(MT_BENCH))
    assert resp.status_code == 201 and resp.json()["prompts"] == 4, resp.text

    job = _select(
        api, _jsonl_bytes(rows), budget=len(TOPICS), clusters=1, decontaminate=["mt-bench"]
    )

    assert job["state"] == "succeeded", job
    report = job["selection"]
    assert report.get("duplicates", 0) == 0 and report.get("near_duplicates", 0) == 0
    assert report["contaminated"] == {"mt-bench": 1}
    assert report["candidates"] == 2 * len(TOPICS)  # both answers reach quality selection
    provenance = jsonl(api, f"/v1/jobs/{job['id']}/files/meta/provenance.jsonl")
    kept = sorted(quality[p["item_id"]] for p in provenance)
    assert kept == [80 + i for i in range(len(TOPICS))], kept
    card = api.get(f"/v1/jobs/{job['id']}/files/README.md").text
    assert "imported" in card and "Synthetic" not in card
