"""Model endpoints are the operator's (issue 11): a tenant names a declared model and sets
sampling; no request, and no message on the services' own interfaces, makes a service connect
to an address the operator did not configure or send the operator's key anywhere else, and no
model server's reply comes back to a tenant."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import pytest

from taxoforge.keys import hash_key, new_key
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb
from taxoforge.v1 import judge_pb2_grpc
from taxoforge_cli.stack import Stack, StackConfig

from .conftest import FAST_RETRIES, FakeControl
from .jobs import submit, wait

pytestmark = pytest.mark.integration

OPERATOR_KEY = "sk-operator-0123456789abcdefghij"
PROBE_REPLY = "probe reply: internal-only text 7f3a"


@dataclass
class Probe:
    """A server on 127.0.0.1 no one configured: it records every request that reaches it."""

    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Setup:
    stack: Stack
    key: str
    probe: Probe

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.stack.gateway_url, timeout=30, headers=headers)


def _serve_probe() -> tuple[Probe, ThreadingHTTPServer]:
    probe = Probe()

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            probe.requests.append({"path": self.path, **dict(self.headers.items())})
            body = json.dumps({"error": PROBE_REPLY}).encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _record

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    probe.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return probe, server


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("endpoints")
    key = new_key()
    tenants = {"tenants": [{"name": "acme", "keys": [hash_key(key)]}]}
    (folder / "tenants.yaml").write_text(json.dumps(tenants))
    env = {
        **FAST_RETRIES,
        "TAXOFORGE_AUTH": "keys",
        "TAXOFORGE_TENANTS_FILE": str(folder / "tenants.yaml"),
        "TAXOFORGE_LLM_API_KEY": OPERATOR_KEY,
        "TAXOFORGE_IMPORT_PRIVATE_URLS": "false",
    }
    probe, server = _serve_probe()
    config = StackConfig(data_dir=folder / "stack", llm="fake", sync_always=False, env=env)
    try:
        with Stack(config) as stack:
            yield Setup(stack, key, probe)
    finally:
        server.shutdown()


@pytest.fixture
def api(setup: Setup) -> Iterator[httpx.Client]:
    with setup.client() as client:
        yield client


@pytest.fixture
def fake(setup: Setup) -> Iterator[FakeControl]:
    control = FakeControl(setup.stack.llm_api_base)
    control.reset()
    yield control
    control.reset()


def _refused(resp: httpx.Response, field: str) -> str:
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["details"][0]["field"] == field, error
    message: str = error["message"]
    # it says which models the caller may use
    assert "use one of: " in message or "models you may name: " in message, message
    return message


def test_the_issues_reproduction_is_refused_and_reaches_nothing(
    setup: Setup, api: httpx.Client
) -> None:
    probe = setup.probe.url
    body = {"count": 1, "models": {"generator": {"api_base": probe}}}
    message = _refused(api.post("/v1/jobs", json=body), "models.generator")
    assert "api_base: model endpoints, keys, prices and limits are the operator's" in message
    assert "models you may name: default, local/all-minilm-l6-v2" in message

    judge = {"instruction": "Why?", "responses": [{"text": "a"}]}
    upload = {"upload": "uploads/0a1b2c3d4e5f/x.jsonl"}
    induce = {"taxonomy_id": "mine", "instructions": ["a"]}
    job, models = "/v1/jobs", "models"
    attempts: list[tuple[str, dict[str, Any], str]] = [
        (job, {"count": 1, models: {"generator": {"model": probe}}}, "models.generator.model"),
        (job, {"count": 1, models: {"judge": {"model": "openai/fake"}}}, "models.judge.model"),
        (job, {"count": 1, models: {"tagger": {"max_concurrency": 9}}}, "models.tagger"),
        (job, {"count": 1, models: {"embedder": "openai/text-embedding-3"}}, "models.embedder"),
        ("/v1/plans", {"count": 1, models: {"responders": [{"api_base": probe}]}}, ""),
        ("/v1/judge", {**judge, "judge": {"api_base": probe}}, "judge"),
        ("/v1/judge", {**judge, "judge": {"model": probe}}, "judge.model"),
        ("/v1/selections", {"source": upload, models: {"embedder_api_base": probe}}, models),
        ("/v1/inductions", {**induce, "embedder_api_base": probe}, "body"),
        ("/v1/inductions", {**induce, "embedder": "ollama/x"}, "embedder"),
        ("/v1/taxonomies/starter:expand", {"nodes": ["x"], "model": {"api_key": "k"}}, "model"),
    ]
    for path, payload, where in attempts:
        _refused(api.post(path, json=payload), where or "models.responders[0]")
    assert setup.probe.requests == []


def test_the_models_a_tenant_may_name_are_listed_without_addresses_or_keys(
    setup: Setup, api: httpx.Client
) -> None:
    with httpx.Client(base_url=setup.stack.gateway_url) as anonymous:
        assert anonymous.get("/v1/models").status_code == 401
    resp = api.get("/v1/models")
    assert resp.status_code == 200, resp.text
    models = {m["name"]: m for m in resp.json()["models"]}
    assert set(models) == {"default", "local/all-minilm-l6-v2"}
    assert models["default"]["model"] == "openai/fake"
    assert "judge" in models["default"]["default_for"]
    assert setup.stack.llm_api_base.removesuffix("/v1") not in resp.text
    assert "127.0.0.1" not in resp.text and OPERATOR_KEY not in resp.text


def test_a_service_never_connects_where_a_message_says(setup: Setup, fake: FakeControl) -> None:
    """The judge's own gRPC interface, as a caller inside the cluster would use it: a model
    named by an address fails, and an address in the old ``api_base`` field (2) on the wire
    is ignored: the call goes to the declared endpoint."""

    def smuggled(model: str) -> pb.ModelConfig:
        address = setup.probe.url.encode()
        wire = pb.ModelConfig(model=model).SerializeToString()
        return pb.ModelConfig.FromString(wire + bytes([2 << 3 | 2, len(address)]) + address)

    candidates = pb.Candidates(
        instruction=pb.Instruction(text="Why is the sky blue?", seed=pb.Seed(language="en")),
        responses=[pb.Response(id="r0", text="Rayleigh scattering.")],
    )

    async def call(judge: pb.ModelConfig) -> pb.Judgment:
        async with grpc.aio.insecure_channel(setup.stack.grpc_addr("judge")) as channel:
            stub = judge_pb2_grpc.JudgeServiceStub(channel)
            request = jpb.JudgeCandidatesRequest(candidates=candidates, judge=judge)
            judgment: pb.Judgment = await stub.JudgeCandidates(request, timeout=30)
            return judgment

    judgment = asyncio.run(call(smuggled("default")))
    assert judgment.scores and not judgment.scores[0].failed
    assert fake.stats()["calls"] != 0  # the declared endpoint answered
    for judge in (smuggled("openai/fake"), pb.ModelConfig(model=setup.probe.url)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            asyncio.run(call(judge))
        assert "not one the operator declared" in (err.value.details() or "")
    # Before: the probe got the judge's prompt with "Authorization: Bearer <operator key>".
    assert setup.probe.requests == []


def test_a_failing_model_servers_reply_never_reaches_the_tenant(
    setup: Setup, api: httpx.Client, fake: FakeControl
) -> None:
    fake.configure(fail_pattern="Grade the answer", fail_status=400)
    job = wait(api, submit(api, count=2, seed=5)["id"])
    assert job["state"] == "failed", job
    assert "HTTP 400 (request refused)" in job["error"], job["error"]

    judged = api.post(
        "/v1/judge", json={"instruction": "Why?", "responses": [{"text": "Because."}]}
    )
    assert judged.status_code == 422, judged.text
    assert "HTTP 400 (request refused)" in judged.text
    server = setup.stack.llm_api_base.removesuffix("/v1")
    for text in (json.dumps(job), judged.text):
        assert "fake failure" not in text  # the fake's reply body
        assert server not in text  # nor the operator's address
    logs = "".join(p.read_text(errors="replace") for p in setup.stack.log_dir.glob("*.log"))
    assert "fake failure" in logs  # the operator still sees what the server said
    assert OPERATOR_KEY not in logs
