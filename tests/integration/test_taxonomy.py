"""Taxonomies through the gateway and the taxonomy service: versions, edits, reviews, GLAN
expansion and induction, against the FAKE model server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from typing import Any

import grpc
import httpx
import pytest
import yaml

from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb
from taxoforge.v1 import taxonomy_pb2_grpc
from taxoforge_cli.stack import Stack

from .conftest import FakeControl
from .jobs import records, submit, wait

pytestmark = pytest.mark.integration


def _document(taxonomy_id: str) -> str:
    return textwrap.dedent(
        f"""\
        id: {taxonomy_id}
        version: "1"
        title: A small taxonomy
        nodes:
          - id: {taxonomy_id}-science
            title: Science
            kind: field
            children:
              - id: {taxonomy_id}-optics
                title: Optics
                kind: discipline
                description: Light, lenses and waves.
                attributes:
                  key_concepts: [refraction, lenses]
              - id: {taxonomy_id}-geology
                title: Geology
                kind: discipline
          - id: {taxonomy_id}-cooking
            title: Cooking
            kind: discipline
            weight: 2
        """
    )


def _import(api: httpx.Client, document: str, new_version: bool = False) -> dict[str, Any]:
    params = {"new_version": "true"} if new_version else {}
    resp = api.post(
        "/v1/taxonomies",
        content=document.encode(),
        headers={"content-type": "application/yaml"},
        params=params,
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
    children = [
        c
        for c in node.get("children", [])
        if c.get("status") != "NODE_STATUS_PROPOSED" and c.get("kind") != "session"
    ]
    if not children:
        return [node]
    return [leaf for child in children for leaf in _leaves(child)]


def _plan_seeds(stack: Stack, recipe: pb.Recipe) -> list[pb.Seed]:
    async def plan() -> list[pb.Seed]:
        async with grpc.aio.insecure_channel(stack.grpc_addr("taxonomy")) as channel:
            stub = taxonomy_pb2_grpc.TaxonomyServiceStub(channel)
            resp = await stub.PlanJob(tpb.PlanJobRequest(recipe=recipe, include_seeds=True))
            return list(resp.seeds)

    return asyncio.run(plan())


def _copy(api: httpx.Client, builtin: str, taxonomy_id: str) -> None:
    """A built-in taxonomy imported again under an id of one's own (once per stack)."""
    if api.get(f"/v1/taxonomies/{taxonomy_id}").status_code == 200:
        return
    document = yaml.safe_load(api.get(f"/v1/taxonomies/{builtin}/export").text)
    document["id"] = taxonomy_id
    _import(api, yaml.safe_dump(document, allow_unicode=True))


def _direct_edit(stack: Stack, taxonomy_id: str) -> grpc.StatusCode:
    """An edit sent to the taxonomy service itself, past the gateway."""

    async def edit() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(stack.grpc_addr("taxonomy")) as channel:
            stub = taxonomy_pb2_grpc.TaxonomyServiceStub(channel)
            request = tpb.EditTaxonomyRequest(id=taxonomy_id)
            request.operations.add(op="prune", node_id="physics")
            try:
                await stub.EditTaxonomy(request)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    return asyncio.run(edit())


def test_builtin_taxonomies_are_read_only_and_a_copy_of_one_is_not(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    """The stack runs with TAXOFORGE_AUTH=none: one tenant, and still no change in place."""
    before = api.get("/v1/taxonomies/knowledge/versions").json()["versions"]
    exported = api.get("/v1/taxonomies/knowledge/export").text
    changes = [
        ("knowledge:edit", {"operations": [{"op": "prune", "node": "physics"}]}),
        ("knowledge:expand", {"nodes": ["physics"], "samples": 1}),
        ("knowledge:review", {"accept_rest": True}),
        ("starter:expand", {"nodes": ["physics"], "samples": 1}),
        (
            "tasks:edit",
            {"operations": [{"op": "rename", "node": "reasoning-and-mathematics", "title": "x"}]},
        ),
    ]
    for path, body in changes:
        resp = api.post(f"/v1/taxonomies/{path}", json=body)
        assert resp.status_code == 409, (path, resp.text)
        message = resp.json()["error"]["message"]
        assert "read-only" in message and "export" in message and "new id" in message, message
    again = api.post(
        "/v1/taxonomies",
        content=exported.encode(),
        headers={"content-type": "application/yaml"},
        params={"new_version": "true"},
    )
    assert again.status_code == 409 and "read-only" in again.text
    assert _direct_edit(stack, "knowledge") == grpc.StatusCode.FAILED_PRECONDITION  # no way round
    assert api.get("/v1/taxonomies/knowledge/versions").json()["versions"] == before
    assert fake.stats()["calls"] == 0  # no expansion job was started

    # The way the message shows: a copy under an id of one's own changes like any taxonomy.
    _copy(api, "knowledge", "my-knowledge")
    resp = api.post("/v1/taxonomies/my-knowledge:expand", json={"nodes": ["physics"]})
    assert resp.status_code == 201, resp.text
    assert wait(api, resp.json()["id"])["state"] == "succeeded"
    review = api.post("/v1/taxonomies/my-knowledge:review", json={"accept_rest": True})
    assert review.status_code == 200 and review.json()["version"] == "3", review.text
    assert api.get("/v1/taxonomies/knowledge/versions").json()["versions"] == before


def test_the_builtin_taxonomies_are_served(api: httpx.Client) -> None:
    listing = {t["id"]: t for t in api.get("/v1/taxonomies").json()["taxonomies"]}
    assert {"starter", "knowledge", "tasks"} <= set(listing)
    assert listing["knowledge"]["leaves"] >= 90
    assert listing["tasks"]["leaves"] >= 20
    versions = api.get("/v1/taxonomies/knowledge/versions").json()["versions"]
    assert versions[0]["version"] == "1"
    assert "imported from knowledge.yaml" in versions[0]["change"]


def test_a_yaml_taxonomy_round_trips(api: httpx.Client) -> None:
    first = _import(api, _document("round"))
    assert first["version"] == "1"
    exported = api.get("/v1/taxonomies/round/export")
    assert exported.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(exported.text)["nodes"][0]["children"][0]["attributes"] == {
        "key_concepts": ["refraction", "lenses"]
    }
    second = _import(api, exported.text, new_version=True)
    assert second["version"] == "2"
    v1 = api.get("/v1/taxonomies/round", params={"version": "1"}).json()
    v2 = api.get("/v1/taxonomies/round", params={"version": "2"}).json()
    assert v1["root"] == v2["root"] and v1["digest"] == v2["digest"]
    again = api.post("/v1/taxonomies", content=_document("round").encode())
    assert again.status_code == 409 and "new version" in again.json()["error"]["message"]


def test_a_bad_document_names_the_line_and_the_node(api: httpx.Client) -> None:
    document = _document("broken").replace("id: broken-geology", "id: broken-optics")
    resp = api.post("/v1/taxonomies", content=document.encode())
    assert resp.status_code == 422
    message = resp.json()["error"]["message"]
    assert message.startswith("upload:15: ")
    assert "broken-optics" in message and "already used on line 9" in message


def test_edits_make_versions_and_jobs_keep_the_one_they_started_on(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    _import(api, _document("edited"))
    fake.configure(slow_pattern="Grade the answer", slow_ms=800)
    job = submit(api, count=12, taxonomy="edited", seed=2)
    edit = api.post(
        "/v1/taxonomies/edited:edit",
        json={
            "base_version": "1",
            "message": "swap geology for baking",
            "operations": [
                {"op": "prune", "node": "edited-geology"},
                {
                    "op": "add",
                    "node": "edited-science",
                    "new": {"id": "edited-baking", "title": "Baking", "kind": "discipline"},
                },
                {"op": "rename", "node": "edited-cooking", "title": "Home cooking"},
                {"op": "reweight", "node": "edited-optics", "weight": 3},
            ],
        },
    )
    assert edit.status_code == 200, edit.text
    assert edit.json()["version"] == "2" and edit.json()["parent_version"] == "1"
    stale = api.post(
        "/v1/taxonomies/edited:edit",
        json={"base_version": "1", "operations": [{"op": "prune", "node": "edited-optics"}]},
    )
    assert stale.status_code == 409 and "at version 2, not 1" in stale.json()["error"]["message"]

    job = wait(api, job["id"])
    assert job["state"] == "succeeded" and job["taxonomy_version"] == "1"
    assert job["recipe"]["taxonomy_version"] == "1"
    nodes = {r["metadata"]["node_id"] for r in records(api, job["id"], "sft")}
    assert "edited-geology" in nodes and "edited-baking" not in nodes

    v2 = api.get("/v1/taxonomies/edited").json()
    assert v2["version"] == "2"
    assert {leaf["id"] for leaf in _leaves(v2["root"])} == {
        "edited-optics",
        "edited-baking",
        "edited-cooking",
    }
    seeds = _plan_seeds(stack, pb.Recipe(taxonomy_id="edited", count=30))
    assert {s.node_id for s in seeds} == {"edited-optics", "edited-baking", "edited-cooking"}
    assert {s.node_title for s in seeds if s.node_id == "edited-cooking"} == {"Home cooking"}
    # Weights: optics 3, baking 1, cooking 2 of 6.
    assert sum(s.node_id == "edited-optics" for s in seeds) == 15
    old = _plan_seeds(stack, pb.Recipe(taxonomy_id="edited", taxonomy_version="1", count=30))
    assert "edited-geology" in {s.node_id for s in old}
    history = api.get("/v1/taxonomies/edited/versions").json()["versions"]
    assert [v["change"] for v in history][1] == "edit: swap geology for baking"


def test_expansion_proposes_subjects_and_syllabi_for_review(
    stack: Stack, api: httpx.Client, fake: FakeControl
) -> None:
    _import(api, _document("grown"))
    resp = api.post(
        "/v1/taxonomies/grown:expand",
        json={
            "nodes": ["grown-optics"],
            "levels": 2,
            "samples": 3,
            "max_children": 4,
            "min_sessions": 2,
            "max_sessions": 4,
        },
    )
    assert resp.status_code == 201, resp.text
    job = wait(api, resp.json()["id"])
    assert job["kind"] == "expand" and job["state"] == "succeeded", job
    assert job["result_taxonomy_version"] == "2"
    assert job["usage"]["calls"] == fake.stats()["calls"]

    grown = api.get("/v1/taxonomies/grown").json()
    optics = _find(grown["root"], "grown-optics")
    subjects = optics["children"]
    assert 1 <= len(subjects) <= 4
    for subject in subjects:
        assert subject["status"] == "NODE_STATUS_PROPOSED" and subject["kind"] == "subject"
        assert subject["id"].startswith("grown-optics-")
        sessions = subject["children"]
        assert 1 <= len(sessions) <= 4
        assert all(
            s["kind"] == "session" and s["attributes"]["key_concepts"]["items"] for s in sessions
        )
    # 3 subject samples, then one syllabus per subject.
    assert fake.stats()["calls"] == 3 + len(subjects)

    # Proposals are not planned on until a person accepts them.
    seeds = _plan_seeds(stack, pb.Recipe(taxonomy_id="grown", count=20))
    assert {s.node_id for s in seeds} == {"grown-optics", "grown-geology", "grown-cooking"}

    keep, *drop = [s["id"] for s in subjects]
    review = api.post(
        "/v1/taxonomies/grown:review", json={"accept": [keep], "reject": drop, "base_version": "2"}
    )
    assert review.status_code == 200, review.text
    assert review.json()["version"] == "3"
    assert (
        f"{1 + len(subjects[0]['children'])} accepted, {len(drop)} rejected"
        in review.json()["change"]
    )
    seeds = _plan_seeds(stack, pb.Recipe(taxonomy_id="grown", count=20))
    assert keep in {s.node_id for s in seeds} and "grown-optics" not in {s.node_id for s in seeds}
    kept = next(s for s in seeds if s.node_id == keep)
    assert len(kept.syllabus) == len(subjects[0]["children"])
    assert all(session.key_concepts for session in kept.syllabus)


def _find(node: dict[str, Any], node_id: str) -> dict[str, Any]:
    if node["id"] == node_id:
        return node
    for child in node.get("children", []):
        found = _find(child, node_id)
        if found:
            return found
    return {}


def test_a_subject_is_expanded_into_a_syllabus(api: httpx.Client, fake: FakeControl) -> None:
    document = _document("course").replace(
        "kind: discipline\n    weight: 2", "kind: subject\n    weight: 2"
    )
    _import(api, document)
    job = wait(
        api,
        api.post(
            "/v1/taxonomies/course:expand",
            json={"nodes": ["course-cooking"], "min_sessions": 3, "max_sessions": 3},
        ).json()["id"],
    )
    assert job["state"] == "succeeded"
    cooking = _find(api.get("/v1/taxonomies/course").json()["root"], "course-cooking")
    assert cooking["children"] and all(c["kind"] == "session" for c in cooking["children"])
    assert fake.stats()["calls"] == 1


def test_induction_merges_near_synonyms_and_drops_rare_labels(
    api: httpx.Client, fake: FakeControl
) -> None:
    def reply(use_case: str, skills: list[str], tags: list[str]) -> str:
        return json.dumps({"use_case": use_case, "skills": skills, "tags": tags})

    fake.configure(
        replies=[
            ["quarterly", reply("email writing", ["formal tone"], ["email", "work"])],
            ["landlord", reply("writing emails", ["formal tone"], ["emails"])],
            ["traceback", reply("debugging python code", ["python", "reading errors"], ["code"])],
            ["sonnet", reply("poetry", ["rhyme"], ["poem"])],
        ]
    )
    instructions = (
        [f"Draft the quarterly update email number {i}" for i in range(5)]
        + [f"Write to my landlord about the heating, version {i}" for i in range(3)]
        + [f"Why does this traceback happen in my script {i}?" for i in range(4)]
        + ["Write a sonnet about the sea"]
    )
    resp = api.post(
        "/v1/inductions",
        json={
            "taxonomy_id": "mine",
            "title": "My instructions",
            "instructions": instructions,
            "min_frequency": 2,
            "merge_threshold": 0.85,
        },
    )
    assert resp.status_code == 201, resp.text
    job = wait(api, resp.json()["id"])
    assert job["kind"] == "induce" and job["state"] == "succeeded", job
    report = job["induction"]
    assert report["instructions"] == 13 and report["encoded"] == 13
    merged = {m["into"]: m["merged"] for m in report["merges"] if m["kind"] == "use_case"}
    assert merged == {"email writing": ["writing email"]}
    assert {(d["kind"], d["label"]) for d in report["dropped"]} >= {("use_case", "poetry")}

    mine = api.get("/v1/taxonomies/mine").json()
    cases = {c["title"]: c for c in mine["root"]["children"]}
    assert set(cases) == {"email writing", "debug python code"}
    assert cases["email writing"]["weight"] == 8 and cases["debug python code"]["weight"] == 4
    assert [s["title"] for s in cases["email writing"]["children"]] == ["formal tone"]
    assert len(cases["email writing"]["attributes"]["examples"]["items"]) == 3
    again = api.post("/v1/inductions", json={"taxonomy_id": "mine", "instructions": ["x"]})
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/taxonomies/my-starter:expand", {"nodes": ["phisics"]}, "did you mean physics"),
        ("/v1/plans", {"count": 5, "difficulties": ["trivial"]}, "unknown difficulty 'trivial'"),
        ("/v1/plans", {"count": 5, "nodes": ["chemistri"]}, "did you mean chemistry"),
        (
            "/v1/plans",
            {
                "count": 5,
                "difficulties": [{"name": "easy", "share": 0.6}, {"name": "hard", "share": 0.6}],
            },
            "difficulty shares sum to 1.2",
        ),
        ("/v1/plans", {"count": 5, "task_types": ["haiku"]}, "unknown task type"),
        ("/v1/plans", {"count": 5, "node_counts": {"physics": 4}}, "sum to 4 but count is 5"),
    ],
)
def test_impossible_requests_say_why(
    api: httpx.Client, path: str, body: dict[str, Any], words: str
) -> None:
    _copy(api, "starter", "my-starter")
    resp = api.post(path, json=body)
    assert resp.status_code == 422, resp.text
    assert words in resp.json()["error"]["message"]


def test_the_cli_prints_a_tree_and_a_plan(stack: Stack, tmp_path: Any) -> None:
    env_gateway = ["--gateway", stack.gateway_url]
    shown = subprocess.run(
        [sys.executable, "-m", "taxoforge_cli", "taxonomy", "show", "starter", *env_gateway],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Natural Sciences" in shown.stdout and "physics" in shown.stdout
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("count: 90\nlanguages: [en, fr, de]\ndifficulties: [easy, hard]\n")
    planned = subprocess.run(
        [
            sys.executable,
            "-m",
            "taxoforge_cli",
            "taxonomy",
            "plan",
            str(recipe),
            "--json",
            *env_gateway,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    totals = {
        (t["dimension"], t["value"]): t["count"] for t in json.loads(planned.stdout)["totals"]
    }
    assert totals[("language", "fr")] == 30 and totals[("difficulty", "hard")] == 45


def test_a_dry_run_lists_the_seeds_of_small_plans_only(stack: Stack) -> None:
    assert len(_plan_seeds(stack, pb.Recipe(taxonomy_id="knowledge", count=1000))) == 1000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        _plan_seeds(stack, pb.Recipe(taxonomy_id="knowledge", count=1_000_000))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "include_seeds lists at most 1000 seeds" in (err.value.details() or "")
