"""A gateway with API keys: tenants see only their own jobs, taxonomies, uploads, benchmarks
and datasets; rate limits, job spend limits and body limits hold; keys never reach the log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from taxoforge.bus import Bus
from taxoforge.keys import hash_key, new_key
from taxoforge.settings import BusSettings
from taxoforge.v1 import common_pb2 as pb
from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES, FakeControl
from .jobs import submit, wait

pytestmark = pytest.mark.integration

BODY_LIMIT = 256 << 10
UPLOAD_LIMIT = 1 << 20
TOKEN_LIMIT = 3000


@dataclass
class Tenants:
    stack: Stack
    keys: dict[str, str]

    def client(self, tenant: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.stack.gateway_url, timeout=30, headers=headers)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    folder = tmp_path_factory.mktemp("tenants")
    keys = {name: new_key() for name in ("alpha", "beta", "slow", "capped")}
    document = {
        "tenants": [
            {"name": "alpha", "keys": [hash_key(keys["alpha"])]},
            {"name": "beta", "keys": [hash_key(keys["beta"])]},
            {
                "name": "slow",
                "keys": [hash_key(keys["slow"])],
                "rate_limit": {"requests_per_s": 0.2, "burst": 3},
            },
            {
                "name": "capped",
                "keys": [hash_key(keys["capped"])],
                "job_limit": {"tokens": TOKEN_LIMIT},
            },
        ]
    }
    (folder / "tenants.yaml").write_text(json.dumps(document))
    env = {
        **FAST_RETRIES,
        "TAXOFORGE_AUTH": "keys",
        "TAXOFORGE_TENANTS_FILE": str(folder / "tenants.yaml"),
        "TAXOFORGE_MAX_BODY_BYTES": str(BODY_LIMIT),
        "TAXOFORGE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "TAXOFORGE_IMPORT_PRIVATE_URLS": "false",  # as on a cluster
    }
    config = StackConfig(data_dir=folder / "stack", llm="fake", sync_always=False, env=env)
    with Stack(config) as stack:
        yield Tenants(stack, keys)


@pytest.fixture
def alpha(tenants: Tenants) -> Iterator[httpx.Client]:
    with tenants.client("alpha") as client:
        yield client


@pytest.fixture
def beta(tenants: Tenants) -> Iterator[httpx.Client]:
    with tenants.client("beta") as client:
        yield client


def _taxonomy(taxonomy_id: str) -> str:
    return textwrap.dedent(
        f"""\
        id: {taxonomy_id}
        title: Private
        nodes:
          - id: {taxonomy_id}-optics
            title: Optics
            kind: discipline
          - id: {taxonomy_id}-cooking
            title: Cooking
            kind: discipline
        """
    )


def test_every_api_route_needs_a_valid_key(tenants: Tenants) -> None:
    with tenants.client(None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        for method, path in [
            ("GET", "/v1/taxonomies"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/jobs/j-0123456789abcdef0123"),
            ("GET", "/v1/benchmarks"),
            ("POST", "/v1/judge"),
        ]:
            resp = anonymous.request(method, path, json={})
            assert resp.status_code == 401, (method, path, resp.text)
            assert resp.headers["www-authenticate"] == "Bearer"
            assert resp.json()["error"]["code"] == "unauthorized"
        wrong = anonymous.get("/v1/taxonomies", headers={"Authorization": f"Bearer {new_key()}"})
        assert wrong.status_code == 401


def test_another_tenants_job_and_its_datasets_do_not_exist(
    alpha: httpx.Client, beta: httpx.Client
) -> None:
    job = wait(alpha, submit(alpha, count=3, seed=11)["id"])
    assert job["state"] == "succeeded", job
    job_id = job["id"]
    for path in [
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/events",
        f"/v1/jobs/{job_id}/datasets/sft",
        f"/v1/jobs/{job_id}/files/README.md",
        f"/v1/jobs/{job_id}/files/meta/provenance.jsonl",
        f"/v1/jobs/{job_id}/records/anything",
    ]:
        assert alpha.get(path).status_code == 200 or path.endswith("anything"), path
        resp = beta.get(path)
        assert resp.status_code == 404, (path, resp.text)
        assert job_id not in resp.text or "does not exist" in resp.text
    assert beta.post(f"/v1/jobs/{job_id}:cancel").status_code == 404
    assert alpha.get(f"/v1/jobs/{job_id}").json()["state"] == "succeeded"


def test_one_idempotency_key_gives_each_tenant_its_own_job(
    alpha: httpx.Client, beta: httpx.Client
) -> None:
    headers = {"Idempotency-Key": "nightly-run-1"}
    first = alpha.post("/v1/jobs", json={"count": 2}, headers=headers)
    second = beta.post("/v1/jobs", json={"count": 2}, headers=headers)
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.json()["id"] != second.json()["id"]
    again = alpha.post("/v1/jobs", json={"count": 2}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_taxonomies_are_private_and_shared_ones_read_only(
    alpha: httpx.Client, beta: httpx.Client
) -> None:
    yaml_headers = {"content-type": "application/yaml"}
    made = alpha.post("/v1/taxonomies", content=_taxonomy("alpha-private"), headers=yaml_headers)
    assert made.status_code == 201, made.text

    alpha_ids = {t["id"] for t in alpha.get("/v1/taxonomies").json()["taxonomies"]}
    beta_ids = {t["id"] for t in beta.get("/v1/taxonomies").json()["taxonomies"]}
    assert "alpha-private" in alpha_ids and "alpha-private" not in beta_ids
    assert {"knowledge", "tasks"} <= alpha_ids & beta_ids  # the shared ones

    for path in ["", "/versions", "/export"]:
        assert alpha.get(f"/v1/taxonomies/alpha-private{path}").status_code == 200
        assert beta.get(f"/v1/taxonomies/alpha-private{path}").status_code == 404, path
    edit = {"operations": [{"op": "prune", "node": "alpha-private-cooking"}]}
    assert beta.post("/v1/taxonomies/alpha-private:edit", json=edit).status_code == 404
    taken = beta.post(
        "/v1/taxonomies",
        content=_taxonomy("alpha-private"),
        headers=yaml_headers,
        params={"new_version": "true"},
    )
    assert taken.status_code == 409 and "taken" in taken.text
    assert (
        alpha.get("/v1/taxonomies/alpha-private/versions").json()["versions"][-1]["version"] == "1"
    )

    missing = beta.post("/v1/jobs", json={"count": 2, "taxonomy": "alpha-private"})
    assert missing.status_code == 422 and "alpha-private" in missing.text
    unknown = beta.post("/v1/jobs", json={"count": 2, "taxonomy": "no-such-one"})
    assert unknown.status_code == 422 and "alpha-private" not in unknown.text  # no id listing
    ok = alpha.post("/v1/jobs", json={"count": 2, "taxonomy": "alpha-private"})
    assert ok.status_code == 201, ok.text

    failed = alpha.post("/v1/inductions", json={"taxonomy_id": "free-again", "instructions": [" "]})
    assert failed.status_code == 422, failed.text
    again = beta.post("/v1/taxonomies", content=_taxonomy("free-again"), headers=yaml_headers)
    assert again.status_code == 201, again.text  # the failed induction kept no claim on the id

    versions = alpha.get("/v1/taxonomies/knowledge/versions").json()["versions"]
    for path, body in [
        ("knowledge:edit", {"operations": [{"op": "prune", "node": "mathematics"}]}),
        ("knowledge:expand", {"nodes": ["physics"], "samples": 1}),
        ("knowledge:review", {"accept_rest": True}),
        ("starter:expand", {"nodes": ["physics"], "samples": 1}),
    ]:
        shared = alpha.post(f"/v1/taxonomies/{path}", json=body)
        assert shared.status_code == 409 and "read-only" in shared.text, (path, shared.text)
    document = alpha.get("/v1/taxonomies/knowledge/export").content
    reimport = beta.post(
        "/v1/taxonomies", content=document, headers=yaml_headers, params={"new_version": "true"}
    )
    assert reimport.status_code == 409 and "read-only" in reimport.text
    assert beta.get("/v1/taxonomies/knowledge/versions").json()["versions"] == versions


def test_uploads_and_benchmarks_are_per_tenant(alpha: httpx.Client, beta: httpx.Client) -> None:
    rows = "\n".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}."}) for i in range(5))
    upload = alpha.post("/v1/uploads", params={"name": "mine.jsonl"}, content=rows.encode())
    assert upload.status_code == 201, upload.text
    source = {"upload": upload.json()["upload"]}
    theirs = beta.post("/v1/selections", json={"source": source})
    assert theirs.status_code == 422 and "no upload of yours" in theirs.text
    mine = alpha.post("/v1/selections", json={"source": source, "selection": {"budget": 3}})
    assert mine.status_code == 201, mine.text
    assert mine.json()["source"]["object"] == source["upload"]  # shown in the tenant's terms

    assert alpha.put("/v1/benchmarks/exam", content=b"What is 2+2?\n").status_code == 201
    assert [b["name"] for b in alpha.get("/v1/benchmarks").json()["benchmarks"]] == ["exam"]
    assert beta.get("/v1/benchmarks").json()["benchmarks"] == []
    exam = alpha.get("/v1/benchmarks/exam")
    assert exam.status_code == 200 and exam.content == b"What is 2+2?\n"
    assert exam.headers["x-content-sha256"] == hashlib.sha256(exam.content).hexdigest()
    assert beta.get("/v1/benchmarks/exam").status_code == 404
    assert alpha.get("/v1/benchmarks/never-put").status_code == 404
    assert beta.delete("/v1/benchmarks/exam").status_code == 404
    beta_upload = beta.post("/v1/uploads", params={"name": "b.jsonl"}, content=rows.encode())
    spec = {"source": {"upload": beta_upload.json()["upload"]}}
    unknown = beta.post("/v1/selections", json={**spec, "selection": {"decontaminate": ["exam"]}})
    assert unknown.status_code == 422 and "'exam' is not registered" in unknown.text
    known = alpha.post(
        "/v1/selections", json={"source": source, "selection": {"decontaminate": ["exam"]}}
    )
    assert known.status_code == 201, known.text
    assert known.json()["recipe"]["selection"]["decontaminate"] == ["exam"]  # its own name
    assert [b["name"] for b in alpha.get("/v1/benchmarks").json()["benchmarks"]] == ["exam"]


def test_a_tenant_over_its_rate_limit_gets_429_and_others_do_not(
    tenants: Tenants, alpha: httpx.Client
) -> None:
    with tenants.client("slow") as slow:
        codes = [slow.get("/v1/benchmarks").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        refused = slow.get("/v1/benchmarks")
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
    assert all(alpha.get("/v1/benchmarks").status_code == 200 for _ in range(10))


def _wait_until_idle(fake: FakeControl, quiet_s: float = 1.5, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    calls, since = fake.stats()["calls"], time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "the model server never went quiet"
        time.sleep(0.25)
        now = fake.stats()["calls"]
        if now != calls:
            calls, since = now, time.monotonic()


def test_a_job_stops_spending_at_its_tenants_limit(tenants: Tenants) -> None:
    fake = FakeControl(tenants.stack.llm_api_base)
    _wait_until_idle(fake)  # the other tests' jobs have made their calls
    fake.reset()
    fake.configure(latency_ms=200)  # calls take time, as a model's do
    with tenants.client("capped") as capped:
        job = submit(capped, count=60, seed=3)
        assert job["spend_limit"] == {"tokens": TOKEN_LIMIT}
        job = wait(capped, job["id"], limit_s=120)
    # A generation job stops generating at its limit and delivers what it has, short; the
    # items it did not get to end as failed with the reason (nothing is left hanging).
    assert job["stopped"].startswith("spend limit reached"), job
    assert job["planned"] == 60 and job["finished"] == 60
    if job["state"] == "succeeded":
        assert job["short"] and job["composition"]["stopped"] == job["stopped"], job
        assert 0 < job["selection"]["sft_records"] < 60
    else:  # nothing was judged before the limit
        assert job["state"] == "failed" and job["selection"]["sft_records"] == 0, job
    assert job["selection"]["failures_by_stage"], job["selection"]
    used = job["usage"]["prompt_tokens"] + job["usage"]["completion_tokens"]
    assert used >= TOKEN_LIMIT
    # Calls in flight count their prompts as they are sent, in every process, and each call
    # is checked as it gets its slot; the replies of calls in flight when the limit is reached
    # still come: measured 1.3x. Before (prompts counted at the reply, other processes' usage
    # up to 1.5 s old, the check made before the wait for a slot) 1.8x alone and up to 5.9x
    # in CI with this module's other jobs; checking only as each message started, 8.8x
    # (benchmarks/spend_bench.py).
    assert used < 2.5 * TOKEN_LIMIT, job["usage"]
    calls = fake.stats()["calls"]
    time.sleep(2.0)
    assert fake.stats()["calls"] == calls, "model calls went on after the job stopped"
    fake.reset()


async def _first_record(tenants: Tenants, path: str, body: dict[str, object]) -> pb.Job:
    """The first record of the job a POST starts, as the job store saw it written."""
    bus = await Bus.connect(BusSettings(nats_url=tenants.stack.nats_url), name="test-first")
    try:
        watcher = await (await bus.jobs_kv()).watch("job.*")
        with tenants.client("capped") as capped:
            made = await asyncio.to_thread(capped.post, path, json=body)
        assert made.status_code == 201, made.text
        key = f"job.{made.json()['id']}"
        while True:
            entry = await watcher.updates(timeout=10.0)
            if entry is not None and entry.key == key and entry.value:
                await watcher.stop()
                return pb.Job.FromString(entry.value)
    finally:
        await bus.close()


async def test_a_taxonomy_job_has_its_tenant_and_limit_before_any_work(tenants: Tenants) -> None:
    with tenants.client("capped") as capped:
        made = capped.post(
            "/v1/taxonomies",
            content=_taxonomy("capped-own"),
            headers={"content-type": "application/yaml"},
        )
        assert made.status_code == 201, made.text
    for path, body in [
        ("/v1/taxonomies/capped-own:expand", {"nodes": ["capped-own-optics"], "samples": 1}),
        ("/v1/inductions", {"taxonomy_id": "capped-induced", "instructions": ["Sort a list."]}),
    ]:
        job = await _first_record(tenants, path, body)
        # Written once, whole, before its work was queued (not adopted after).
        assert job.tenant == "capped", path
        assert job.spend_limit.tokens == TOKEN_LIMIT, path


def test_bodies_over_the_limits_are_refused_chunked_or_not(
    alpha: httpx.Client, tenants: Tenants
) -> None:
    big = {"count": 2, "name": "x" * (BODY_LIMIT + 10)}
    declared = alpha.post("/v1/jobs", json=big)
    assert declared.status_code == 413, declared.text

    def chunks(total: int, size: int = 64 << 10) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield b"a" * min(size, total - sent)
            sent += size

    chunked = alpha.post("/v1/jobs", content=chunks(BODY_LIMIT + 1))
    assert chunked.status_code == 413, chunked.text
    before = alpha.get("/v1/benchmarks").json()["benchmarks"]
    upload = alpha.put("/v1/benchmarks/huge", content=chunks(UPLOAD_LIMIT + 1))
    assert upload.status_code == 413, upload.text
    assert alpha.get("/v1/benchmarks").json()["benchmarks"] == before  # nothing half-stored
    fits = alpha.post("/v1/uploads", params={"name": "ok.txt"}, content=chunks(UPLOAD_LIMIT))
    assert fits.status_code == 201 and fits.json()["bytes"] == UPLOAD_LIMIT


def test_no_key_reaches_the_log(tenants: Tenants, alpha: httpx.Client) -> None:
    wrong = new_key()
    with tenants.client(None) as anonymous:
        anonymous.get("/v1/taxonomies", headers={"Authorization": f"Bearer {wrong}"})
    alpha.get("/v1/jobs/j-ffffffffffffffffffff")
    alpha.post("/v1/jobs", json={"count": 1, "taxonomy": tenants.keys["beta"]})
    log = tenants.stack.log_dir.glob("*.log")
    text = "".join(p.read_text(errors="replace") for p in log)
    assert text, "no logs found"
    for key in [wrong, *tenants.keys.values()]:
        assert key not in text


def test_a_url_import_cannot_reach_private_addresses(tenants: Tenants, alpha: httpx.Client) -> None:
    for url in [
        f"{tenants.stack.gateway_url}/openapi.json",  # 127.0.0.1
        f"http://localhost:{tenants.stack.port('gateway')}/openapi.json",  # a name for it
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
    ]:
        created = alpha.post("/v1/selections", json={"source": {"url": url}})
        assert created.status_code == 201, created.text
        job = wait(alpha, created.json()["id"], limit_s=60)
        assert job["state"] == "failed", job
        assert "private address" in job["error"], job["error"]
