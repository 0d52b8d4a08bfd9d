"""Browser tests of the web console: Debian's headless Chromium (installed by `make browser`,
never downloaded at test time) driven by Playwright, against a stack with API keys on the FAKE
model server.

Fixtures: ``console`` (the stack, one per test module, with tenants ``alpha`` and ``beta``),
``browser`` (one Chromium per module), ``page`` (a fresh browser session per test that fails
the test on any JavaScript error or console error, and saves a screenshot when the test
fails) and ``login`` (signs a page in with a tenant's key).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from taxoforge.keys import hash_key, new_key
from taxoforge_cli.stack import Stack, StackConfig
from tests.integration.conftest import FAST_RETRIES, FakeControl

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("TAXOFORGE_CHROMIUM", "/usr/bin/chromium"))
TENANTS = ("alpha", "beta")


@dataclass
class Console:
    """A running stack with API keys, and each tenant's key."""

    stack: Stack
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.stack.gateway_url

    def api(self, tenant: str) -> httpx.Client:
        """A REST client of ``tenant`` (to set up jobs the pages then show)."""
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        return httpx.Client(base_url=self.stack.gateway_url, timeout=30, headers=headers)

    def fake(self) -> FakeControl:
        return FakeControl(self.stack.llm_api_base)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The whole stack as processes (nats, fake model, services, gateway with keys)."""
    folder = tmp_path_factory.mktemp("console")
    keys = {name: new_key() for name in TENANTS}
    document = {
        "tenants": [
            {
                "name": name,
                "keys": [hash_key(keys[name])],
                # Pages, their live streams and the tests' own REST calls: well under this.
                "rate_limit": {"requests_per_s": 200, "burst": 400},
            }
            for name in TENANTS
        ]
    }
    (folder / "tenants.yaml").write_text(json.dumps(document))
    env = {
        **FAST_RETRIES,
        "TAXOFORGE_AUTH": "keys",
        "TAXOFORGE_TENANTS_FILE": str(folder / "tenants.yaml"),
    }
    config = StackConfig(data_dir=folder / "stack", llm="fake", sync_always=False, env=env)
    with Stack(config) as stack:
        yield Console(stack, keys)


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator[Browser]:
    """Headless Chromium from the Debian package. It needs the stack first: Playwright's sync
    API leaves an event loop running, and the stack's start runs one of its own."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"the console's browser tests need Chromium at {CHROMIUM}: run `make browser` "
            "(installs Debian's chromium package)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root in CI, where Chromium's sandbox cannot start.
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test, so ``page`` knows whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@dataclass
class PageLog:
    """What the browser reported while a test ran."""

    errors: list[str]

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text} ({message.location})")

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught JS error: {error.message}")


@pytest.fixture
def page(
    browser: Browser,
    console: Console,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Page]:
    """A new browser session (no cookies) on the console; fails the test on any JS error."""
    context = browser.new_context(base_url=console.url)
    context.set_default_timeout(20_000)
    opened = context.new_page()
    log = PageLog(errors=[])
    opened.on("console", log.on_console)
    opened.on("pageerror", log.on_page_error)
    try:
        yield opened
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            folder = tmp_path_factory.mktemp("screenshots")
            shot = folder / f"{request.node.name}.png"
            try:
                opened.screenshot(path=str(shot), full_page=True)
                sys.stderr.write(f"\nscreenshot of the failed page: {shot} (url {opened.url})\n")
            except Error as exc:  # the page may be gone; the test's own failure matters more
                sys.stderr.write(f"\nno screenshot: {exc}\n")
        context.close()
    if log.errors:
        pytest.fail("the page reported JavaScript errors:\n" + "\n".join(log.errors))


@pytest.fixture
def login(console: Console) -> Callable[[Page, str], None]:
    """Sign ``page`` in as ``tenant`` through the login form, as a person would."""

    def sign_in(page: Page, tenant: str) -> None:
        page.goto("/ui/login")
        page.get_by_label("API key").fill(console.keys[tenant])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/jobs")

    return sign_in
