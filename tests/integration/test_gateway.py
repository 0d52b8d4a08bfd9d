"""The gateway's REST contract: clear 4xx for bad input, nothing half-created, docs served."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from taxoforge.bus import Bus
from taxoforge.bus.topology import KV_JOBS
from taxoforge.settings import BusSettings
from taxoforge_cli.stack import Stack

from .jobs import submit, wait

pytestmark = pytest.mark.integration


def _job_count(stack: Stack) -> int:
    async def count() -> int:
        bus = await Bus.connect(BusSettings(nats_url=stack.nats_url), name="test-count")
        try:
            return await bus.count_keys(KV_JOBS, "job.*")
        finally:
            await bus.close()

    return asyncio.run(count())


@pytest.mark.parametrize(
    ("recipe", "field", "words"),
    [
        ({}, "count", "required"),
        ({"count": 0}, "count", "greater than or equal to 1"),
        ({"count": 5, "colour": "red"}, "colour", "unknown field"),
        (
            {"count": 5, "languages": [{"code": "en", "share": 0.5}, {"code": "fr", "share": 0.3}]},
            "body",
            "shares sum to 0.8; they must sum to 1",
        ),
        ({"count": 5, "languages": ["xx"]}, "languages[0]", "unknown language 'xx'"),
        ({"count": 5, "languages": ["en", "en"]}, "body", "language lists a value twice"),
        (
            {"count": 5, "responses_per_instruction": 1},
            "responses_per_instruction",
            "greater than or equal to 2",
        ),
        (
            {"count": 5, "models": {"judge": {"temperature": 5}}},
            "models.judge.temperature",
            "less than or equal to 2",
        ),
    ],
)
def test_bad_recipes_are_refused_with_what_to_fix(
    stack: Stack, api: httpx.Client, recipe: dict[str, object], field: str, words: str
) -> None:
    before = _job_count(stack)
    resp = api.post("/v1/jobs", json=recipe)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_request"
    assert any(d["field"].startswith(field) and words in d["message"] for d in error["details"]), (
        error
    )
    assert words in error["message"]
    assert _job_count(stack) == before, "a refused recipe must create nothing"


def test_an_unknown_taxonomy_is_refused_and_nothing_is_created(
    stack: Stack, api: httpx.Client
) -> None:
    before = _job_count(stack)
    resp = api.post("/v1/jobs", json={"count": 3, "taxonomy": "no-such-thing"})
    assert resp.status_code == 422
    assert (
        "taxonomy 'no-such-thing' does not exist; known: knowledge, starter, tasks"
        in resp.json()["error"]["message"]
    )
    assert _job_count(stack) == before


def test_not_json_is_refused(api: httpx.Client) -> None:
    resp = api.post("/v1/jobs", content=b"count: 3", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_request"


def test_unknown_and_malformed_job_ids(api: httpx.Client) -> None:
    missing = api.get("/v1/jobs/j-0000000000000000")
    assert missing.status_code == 404
    assert "does not exist" in missing.json()["error"]["message"]
    assert api.get("/v1/jobs/not-a-job").status_code == 422
    assert api.post("/v1/jobs/j-0000000000000000:cancel").status_code == 404
    assert api.get("/v1/jobs/j-0000000000000000/datasets/sft").status_code == 404
    assert api.get("/v1/jobs/j-0000000000000000/datasets/other").status_code == 422


def test_a_finished_job_cannot_be_cancelled(api: httpx.Client) -> None:
    job = wait(api, submit(api, count=2)["id"])
    resp = api.post(f"/v1/jobs/{job['id']}:cancel")
    assert resp.status_code == 409
    assert "already succeeded" in resp.json()["error"]["message"]


def test_taxonomies_are_served(api: httpx.Client) -> None:
    listing = api.get("/v1/taxonomies").json()
    starter = next(t for t in listing["taxonomies"] if t["id"] == "starter")
    assert starter["leaves"] == 15
    tree = api.get("/v1/taxonomies/starter").json()
    assert tree["version"] == starter["version"]
    assert [n["id"] for n in tree["root"]["children"]][:2] == [
        "natural-sciences",
        "formal-sciences",
    ]
    assert api.get("/v1/taxonomies/nope").status_code == 404


def test_plans_are_a_dry_run(stack: Stack, api: httpx.Client) -> None:
    before = _job_count(stack)
    plan = api.post(
        "/v1/plans",
        json={
            "count": 100,
            "languages": [{"code": "en", "share": 0.7}, {"code": "de", "share": 0.3}],
        },
    ).json()
    assert plan["planned"] == 100
    by_language: dict[str, int] = {}
    for cell in plan["cells"]:
        by_language[cell["language"]] = by_language.get(cell["language"], 0) + cell["count"]
    assert by_language == {"en": 70, "de": 30}
    assert _job_count(stack) == before


def test_health_readiness_and_docs(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and all(ready.json()["checks"].values())
    spec = api.get("/openapi.json").json()
    assert {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}:cancel",
        "/v1/jobs/{job_id}/datasets/{kind}",
        "/v1/taxonomies/{taxonomy_id}",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    assert api.get("/docs").status_code == 200


def test_progress_streams_as_server_sent_events(api: httpx.Client) -> None:
    job_id = submit(api, count=3, max_candidates=1.0)["id"]
    events: list[tuple[str, dict[str, object]]] = []
    with api.stream("GET", f"/v1/jobs/{job_id}/events", params={"interval_s": 0.2}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    assert events[-1][0] == "end" and events[-1][1]["state"] == "succeeded"
    finished = [e[1]["finished"] for e in events if e[0] == "progress"]
    assert finished == sorted(finished) and finished[-1] == 3
    assert api.get("/v1/jobs/j-0000000000000000/events").status_code == 404


def test_the_largest_count_is_planned_and_submitted_in_seconds(api: httpx.Client) -> None:
    recipe = {"count": 1_000_000, "taxonomy": "knowledge", "languages": ["en", "fr"]}
    started = time.monotonic()
    plan = api.post("/v1/plans", json=recipe)
    assert plan.status_code == 200, plan.text
    assert plan.json()["planned"] == 1_000_000
    assert sum(cell["count"] for cell in plan.json()["cells"]) == 1_000_000
    job = api.post("/v1/jobs", json=recipe)
    assert job.status_code == 201, job.text
    took = time.monotonic() - started
    cancelled = api.post(f"/v1/jobs/{job.json()['id']}:cancel")  # a million items: not here
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert took < 5, f"planning and submitting a million seeds took {took:.1f} s"


_JSON = {"content-type": "application/json"}
# A body per operation that takes JSON: valid but for one text, a lone surrogate. An operation
# added without one here fails the test, so every new one is covered.
_SURROGATE = "\ud800"
_LONE_SURROGATE_BODIES: dict[str, object] = {
    "POST /v1/jobs": {"count": 2, "name": _SURROGATE},
    "POST /v1/plans": {"count": 2, "nodes": [f"physics{_SURROGATE}"]},
    "POST /v1/taxonomies": {"id": "s", "title": _SURROGATE, "nodes": [{"id": "a", "title": "A"}]},
    "POST /v1/taxonomies/{taxonomy_id}:edit": {
        "operations": [{"op": "rename", "node": "physics", "title": _SURROGATE}]
    },
    "POST /v1/taxonomies/{taxonomy_id}:review": {"accept": [_SURROGATE]},
    "POST /v1/taxonomies/{taxonomy_id}:expand": {"nodes": ["physics"], "name": _SURROGATE},
    "POST /v1/inductions": {"taxonomy_id": "induced", "instructions": ["ok", _SURROGATE]},
    "POST /v1/judge": {"instruction": "Hi", "responses": [{"text": "a"}, {"text": _SURROGATE}]},
    "POST /v1/selections": {"source": {"path": "/data/x.jsonl"}, "name": _SURROGATE},
}


def test_a_lone_surrogate_is_a_422_for_every_operation_that_takes_json(
    api: httpx.Client,
) -> None:
    copy = api.get("/v1/taxonomies/starter/export").text.replace("id: starter\n", "id: mine\n", 1)
    imported = api.post(
        "/v1/taxonomies", content=copy, headers={"content-type": "application/yaml"}
    )
    assert imported.status_code in (201, 409), imported.text  # 409: made by an earlier run
    operations = [
        f"{method.upper()} {path}"
        for path, ops in api.get("/openapi.json").json()["paths"].items()
        for method, op in ops.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    assert sorted(operations) == sorted(_LONE_SURROGATE_BODIES)
    for operation, body in _LONE_SURROGATE_BODIES.items():
        method, path = operation.split(" ")
        url = path.replace("{taxonomy_id}", "mine")
        resp = api.request(method, url, content=json.dumps(body), headers=_JSON)  # escaped
        assert resp.status_code == 422, (operation, resp.text)
        assert "not valid Unicode" in resp.json()["error"]["message"], (operation, resp.text)

    # The same text in YAML reaches the taxonomy service, which refuses it with its line.
    document = 'id: s\nnodes:\n  - id: a\n    title: "\\ud800"\n'
    yaml_resp = api.post(
        "/v1/taxonomies", content=document, headers={"content-type": "application/yaml"}
    )
    assert yaml_resp.status_code == 422, yaml_resp.text
    assert "upload:4:" in yaml_resp.text and "lone surrogate" in yaml_resp.text
    # Query text is decoded leniently (never a surrogate): an upload's name is just replaced.
    upload = api.post("/v1/uploads?name=a%ED%A0%80.jsonl", content=b'{"instruction": "x"}\n')
    assert upload.status_code == 201, upload.text
    # A pair is one character, stored as such.
    emoji = {"id": "emoji", "title": "\N{GRINNING FACE}", "nodes": [{"id": "e", "title": "E"}]}
    made = api.post("/v1/taxonomies", content=json.dumps(emoji), headers=_JSON)
    assert made.status_code in (201, 409), made.text
    assert api.get("/v1/taxonomies/emoji").json()["title"] == "\N{GRINNING FACE}"
