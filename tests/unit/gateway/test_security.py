"""The gateway's guards, each alone: tenants file, key check, rate limit, body limit, CORS,
log redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.deps import ApiError, Auth, authenticated
from gateway.limits import BodyLimit, ValidText
from gateway.settings import GatewaySettings
from gateway.tenants import LOCAL, RateLimiter, Tenant, TenantRegistry, TenantsFileError
from taxoforge.keys import RateLimit, hash_key, new_key
from taxoforge.logging import configure_logging, redact


def _write(path: Path, tenants: list[dict[str, object]]) -> None:
    path.write_text(json.dumps({"tenants": tenants}))


def test_keys_are_random_and_only_their_hash_is_kept(tmp_path: Path) -> None:
    key, other = new_key(), new_key()
    assert key != other and key.startswith("tfk_") and len(key) > 40
    path = tmp_path / "tenants.yaml"
    _write(path, [{"name": "acme", "keys": [hash_key(key)]}])
    registry = TenantRegistry(path)
    tenant = registry.authenticate(key)
    assert tenant is not None and tenant.name == "acme"
    assert registry.authenticate(other) is None
    assert registry.authenticate(hash_key(key)) is None  # the stored hash is not a key
    assert key not in path.read_text()


@pytest.mark.parametrize(
    ("tenants", "message"),
    [
        ([{"name": "acme", "keys": ["tfk_plainkeyinthefile"]}], "not a key hash"),
        ([{"name": "Acme!", "keys": [hash_key("k")]}], "name"),
        (
            [{"name": "a", "keys": [hash_key("k")]}, {"name": "a", "keys": [hash_key("j")]}],
            "unique",
        ),
        ([{"name": "a", "keys": [hash_key("k")]}, {"name": "b", "keys": [hash_key("k")]}], "two"),
        ([{"name": "a", "keys": [hash_key("k")], "job_limit": {"tokens": -1}}], "job_limit"),
    ],
)
def test_a_bad_tenants_file_is_refused_with_the_reason(
    tmp_path: Path, tenants: list[dict[str, object]], message: str
) -> None:
    path = tmp_path / "tenants.yaml"
    _write(path, tenants)
    with pytest.raises(TenantsFileError, match=message):
        TenantRegistry(path)


def test_a_plain_key_in_the_file_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    secret = new_key()
    _write(path, [{"name": "acme", "keys": [secret]}])
    with pytest.raises(TenantsFileError) as err:
        TenantRegistry(path)
    assert secret not in str(err.value)


def test_keys_rotate_without_a_restart_and_a_broken_edit_keeps_the_old_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tenants.yaml"
    old, new = new_key(), new_key()
    _write(path, [{"name": "acme", "keys": [hash_key(old)]}])
    registry = TenantRegistry(path, check_every_s=0)
    assert registry.authenticate(old) is not None
    _write(path, [{"name": "acme", "keys": [hash_key(new)]}])
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert registry.authenticate(new) is not None
    assert registry.authenticate(old) is None
    path.write_text("tenants: [")  # a half-written edit
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert registry.authenticate(new) is not None


def test_auth_answers_401_without_a_valid_key_and_429_over_the_rate(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "tenants.yaml"
    rate = {"requests_per_s": 0.5, "burst": 2}
    _write(path, [{"name": "acme", "keys": [hash_key(key)], "rate_limit": rate}])
    auth = Auth(TenantRegistry(path))
    for bad in (None, "", "tfk_wrong"):
        with pytest.raises(ApiError) as err:
            auth.tenant(bad)
        assert err.value.status == 401 and err.value.headers == {"WWW-Authenticate": "Bearer"}
    assert auth.tenant(key).name == "acme"
    assert auth.tenant(key).name == "acme"
    with pytest.raises(ApiError) as err:
        auth.tenant(key)
    assert err.value.status == 429
    assert 1 <= int(err.value.headers["Retry-After"]) <= 2
    assert Auth(None).tenant(None) is LOCAL


def test_the_rate_limiter_refills_at_its_rate() -> None:
    tenant = Tenant(
        name="t", keys=[hash_key("k")], rate_limit=RateLimit(requests_per_s=100, burst=5)
    )
    limiter = RateLimiter()
    assert [limiter.wait_s(tenant) for _ in range(5)] == [0.0] * 5
    wait = limiter.wait_s(tenant)
    assert 0 < wait <= 0.01
    time.sleep(0.03)  # three requests' worth
    assert [limiter.wait_s(tenant) == 0.0 for _ in range(3)] == [True, True, True]
    assert limiter.wait_s(tenant) > 0


@pytest.fixture
def echo() -> Iterator[TestClient]:
    """A tiny app behind BodyLimit: 100 bytes for bodies, 1000 for uploads."""
    app = FastAPI()

    @app.post("/v1/things")
    async def things(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/v1/uploads")
    async def uploads(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"bytes": size}

    @app.post("/v1/headers")
    async def headers(request: Request) -> dict[str, str]:
        return dict(request.headers)

    wrapped = BodyLimit(app, default_bytes=100, upload_bytes=1000)
    with TestClient(wrapped) as client:  # type: ignore[arg-type]
        yield client


def _chunks(total: int, size: int = 10) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_bodies_over_the_limit_are_refused_declared_or_chunked(echo: TestClient) -> None:
    assert echo.post("/v1/things", content=b"x" * 100).json() == {"bytes": 100}
    declared = echo.post("/v1/things", content=b"x" * 101)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"
    sent = echo.post("/v1/headers", content=_chunks(50)).json()
    assert "content-length" not in sent and sent["transfer-encoding"] == "chunked"
    chunked = echo.post("/v1/things", content=_chunks(150))
    assert chunked.status_code == 413
    assert echo.post("/v1/things", content=_chunks(90)).json() == {"bytes": 90}
    assert echo.post("/v1/uploads", content=_chunks(1000)).json() == {"bytes": 1000}
    assert echo.post("/v1/uploads", content=_chunks(1001)).status_code == 413


def test_cors_is_off_unless_origins_are_configured() -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    off = TestClient(create_app(GatewaySettings(auth="none")))
    resp = off.options("/v1/jobs", headers=preflight)
    assert "access-control-allow-origin" not in resp.headers
    on = TestClient(create_app(GatewaySettings(auth="none", cors_origins=["https://app.example"])))
    allowed = on.options("/v1/jobs", headers={**preflight, "Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = on.options("/v1/jobs", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers


def test_keys_mode_without_a_tenants_file_does_not_start() -> None:
    with pytest.raises(TenantsFileError, match="TAXOFORGE_TENANTS_FILE"):
        create_app(GatewaySettings(auth="keys", tenants_file=None))


def test_log_lines_never_carry_secrets() -> None:
    key = new_key()
    event = {
        "event": f"call failed: header Authorization: Bearer {key}",
        "authorization": f"Bearer {key}",
        "api_key": "sk-abcdefghijklmnop",
        "url": "nats://taxoforge:hunter2@nats:4222",
        "note": f"key={key}",
        "count": 3,
    }
    out = json.dumps(redact(None, "info", dict(event)))
    assert key not in out and "hunter2" not in out and "sk-abcdefghijklmnop" not in out
    assert '"count": 3' in out and "nats://taxoforge:[redacted]@nats:4222" in out


def test_an_unhandled_error_leaves_no_key_in_the_gateway_log(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "tenants.yaml"
    _write(path, [{"name": "acme", "keys": [hash_key(key)]}])
    app = create_app(GatewaySettings(auth="keys", tenants_file=str(path)))

    @app.get("/v1/boom", dependencies=authenticated)
    async def boom(request: Request) -> None:
        credentials = request.headers["authorization"]
        raise RuntimeError(f"forced, while holding {credentials}")

    log = io.StringIO()
    handlers, hook = list(logging.getLogger().handlers), sys.excepthook
    configure_logging("info", "json", service="gateway", stream=log)
    structlog.configure(cache_logger_on_first_use=False)
    try:
        client = TestClient(app, raise_server_exceptions=False)  # no lifespan: no NATS needed
        resp = client.get("/v1/boom", headers={"Authorization": f"Bearer {key}"})
    finally:
        sys.excepthook = hook
        structlog.reset_defaults()
        for handler in set(logging.getLogger().handlers) - set(handlers):
            logging.getLogger().removeHandler(handler)
    assert resp.status_code == 500 and key not in resp.text
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    error = next(line for line in lines if line["event"] == "unhandled_error")
    assert error["exception"][0]["frames"][-1]["name"] == "boom"  # the traceback is logged
    assert key[4:16] not in log.getvalue()


def _json_operations(app: FastAPI) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "\\ud800", "count": 2}',  # the escape: valid JSON
        '{"name": "\ud800"}'.encode("utf-8", "surrogatepass"),  # the bytes
        b'{"items": [{"instruction": "x", "tags": {"\\udfff": 1}}]}',  # a key, nested
    ],
)
def test_a_lone_surrogate_in_any_json_body_is_a_422(body: bytes) -> None:
    app = create_app(GatewaySettings(auth="none"))
    app.state.backend = None  # no route gets that far: the text is refused first
    client = TestClient(app, raise_server_exceptions=False)
    operations = _json_operations(app)
    assert len(operations) >= 9  # jobs, plans, taxonomies (4), inductions, judge, selections
    for method, path in operations:
        url = path.replace("{taxonomy_id}", "mine")
        resp = client.request(
            method, url, content=body, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 422, (method, path, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "invalid_request" and "not valid Unicode" in error["message"]


def test_text_checks_pass_pairs_and_leave_uploads_alone() -> None:
    app = FastAPI()

    @app.post("/v1/things")
    async def things(request: Request) -> dict[str, object]:
        return {"body": await request.json()}

    @app.post("/v1/uploads")
    async def uploads(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    client = TestClient(ValidText(app))  # type: ignore[arg-type]
    paired = client.post("/v1/things", content=b'{"t": ["\\ud83d\\ude00", "\\\\ud800"]}')
    assert paired.json() == {"body": {"t": ["\N{GRINNING FACE}", "\\ud800"]}}
    file = b'{"instruction": "\\ud800"}\n'  # read leniently by the selector, not refused here
    assert client.post("/v1/uploads", content=file).json() == {"bytes": len(file)}
    lone = client.post("/v1/things", content=b'{"t": ["ok", "\\ud800"]}')
    assert lone.status_code == 422 and "t[1]: a lone surrogate" in lone.json()["detail"]
