"""The console's sign-in: a key checked by the tenant registry, kept in a strict cookie."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.ui.session import COOKIE, login_target
from taxoforge.keys import hash_key

KEY = "tfk_console_unit_key"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n- name: alpha\n  keys: ['{hash_key(KEY)}']\n")
    app = create_app(GatewaySettings(auth="keys", tenants_file=str(tenants)))
    # No lifespan: these pages need no backend (no NATS).
    yield TestClient(app, follow_redirects=False)


def test_a_page_without_a_session_goes_to_the_login_form(client: TestClient) -> None:
    resp = client.get("/ui/jobs?status=x")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/ui/login?next=/ui/jobs%3Fstatus%3Dx"
    form = client.get("/ui/login")
    assert form.status_code == 200
    assert '<label for="api_key">API key</label>' in form.text
    assert "script-src 'self'" in form.headers["content-security-policy"]


def test_a_valid_key_becomes_a_strict_http_only_cookie(client: TestClient) -> None:
    resp = client.post("/ui/login", content=f"api_key={KEY}&next=/ui/jobs/j-1", headers=FORM)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/ui/jobs/j-1"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={KEY};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure


def test_a_wrong_key_is_refused_on_the_form(client: TestClient) -> None:
    resp = client.post("/ui/login", content="api_key=tfk_wrong", headers=FORM)
    assert resp.status_code == 401
    assert "not valid" in resp.text
    assert "set-cookie" not in resp.headers


def test_a_cookie_with_a_wrong_key_is_no_session(client: TestClient) -> None:
    client.cookies.set(COOKIE, "tfk_wrong", path="/ui")
    assert client.get("/ui/jobs").status_code == 303


def test_logout_clears_the_cookie(client: TestClient) -> None:
    resp = client.post("/ui/logout")
    assert resp.status_code == 303
    assert f'{COOKIE}=""' in resp.headers["set-cookie"]
    assert "Max-Age=0" in resp.headers["set-cookie"]


def test_a_cross_site_post_is_refused(client: TestClient) -> None:
    client.cookies.set(COOKIE, KEY, path="/ui")
    resp = client.post("/ui/jobs/j-abcdef/cancel", headers={"origin": "https://evil.example"})
    assert resp.status_code == 403
    resp = client.post("/ui/jobs/j-abcdef/cancel", headers={"sec-fetch-site": "cross-site"})
    assert resp.status_code == 403


def test_console_errors_are_pages_and_api_errors_stay_json(client: TestClient) -> None:
    page = client.get("/ui/static/nothing.js")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    api = client.get("/v1/jobs/j-abcdef")
    assert api.status_code == 401 and api.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("asked", "target"),
    [
        (None, "/ui/jobs"),
        ("/ui/jobs/j-1?page=2", "/ui/jobs/j-1?page=2"),
        ("https://evil.example/ui/", "/ui/jobs"),
        ("//evil.example/ui/x", "/ui/jobs"),
        ("/v1/jobs", "/ui/jobs"),
        ("/ui/\\evil", "/ui/jobs"),
    ],
)
def test_login_returns_only_to_console_pages(asked: str | None, target: str) -> None:
    assert login_target(asked) == target


def test_an_invalid_console_request_is_an_error_page(client: TestClient) -> None:
    resp = client.get("/ui/login?next=" + "x" * 3000)
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("text/html")
    assert "next" in resp.text
