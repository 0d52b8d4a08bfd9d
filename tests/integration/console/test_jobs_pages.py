"""The console's jobs and records pages in a real browser, on a stack with the FAKE model.

One job of tenant alpha (pairwise judging, a budget that drops some records) serves every
test of the module; a second, slowed-down one shows live progress.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.integration.console.conftest import Console
from tests.integration.jobs import jsonl, submit, wait

pytestmark = pytest.mark.integration

# 2 answers per item judged pairwise in both orders; the budget keeps 3 records.
RECIPE: dict[str, Any] = {
    "name": "console-pairs",
    "count": 6,
    "seed": 41,
    "responses_per_instruction": 2,
    "judging": {"mode": "pairwise"},
    "budget": 3,
}


@pytest.fixture(scope="module")
def finished(console: Console) -> Iterator[dict[str, Any]]:
    """Alpha's finished job, with its kept ids and its drops (as the REST API lists them)."""
    console.fake().reset()
    with console.api("alpha") as api:
        job = wait(api, submit(api, **RECIPE)["id"], limit_s=180)
        assert job["state"] == "succeeded", job
        base = f"/v1/jobs/{job['id']}/files/meta"
        job["kept"] = [p["item_id"] for p in jsonl(api, f"{base}/provenance.jsonl")]
        drops = [d for d in jsonl(api, f"{base}/dropped.jsonl") if "candidate" not in d]
        job["drops"] = Counter(d["reason"] for d in drops)
    assert job["kept"] and job["drops"]["not_selected"], job  # the budget left some out
    yield job


def test_the_rest_api_lists_only_the_tenants_jobs(
    console: Console, finished: dict[str, Any]
) -> None:
    with console.api("alpha") as alpha, console.api("beta") as beta:
        listed = alpha.get("/v1/jobs")
        assert listed.status_code == 200, listed.text
        jobs = listed.json()["jobs"]
        assert finished["id"] in [j["id"] for j in jobs]
        assert next(j for j in jobs if j["id"] == finished["id"])["state"] == "succeeded"
        assert finished["id"] not in beta.get("/v1/jobs").text
        assert alpha.get("/v1/jobs", headers={"Authorization": ""}).status_code == 401


def test_the_jobs_list_follows_a_job_live_to_done(
    console: Console, finished: dict[str, Any], page: Page, login: Callable[[Page, str], None]
) -> None:
    login(page, "alpha")
    fake = console.fake()
    fake.configure(latency_ms=400)  # long enough to see it running
    try:
        with console.api("alpha") as api:
            job = submit(api, name="console-live", count=2, seed=43)
        page.goto("/ui/jobs")
        row = page.locator(f'tr[data-job="{job["id"]}"]')
        state = row.locator("[data-field=state]")
        expect(state).not_to_have_text("succeeded")
        # Marks this very document: a reload or a navigation would lose it.
        page.evaluate("window.stillThisPage = true")
        expect(state).to_have_text("succeeded", timeout=120_000)
        assert page.evaluate("window.stillThisPage") is True
        finished_count = row.locator("[data-field=finished]").inner_text()
        assert int(finished_count.replace(",", "")) >= 2
        assert row.locator("[data-field=tokens]").inner_text() != "0"
    finally:
        fake.reset()
    # The module's finished job is listed with its state, and links to its page.
    page.reload()
    page.get_by_role("link", name=finished["id"]).click()
    expect(page.locator("#job-state")).to_have_text("succeeded")


def test_the_job_page_shows_funnel_health_selection_and_files(
    finished: dict[str, Any], page: Page, login: Callable[[Page, str], None]
) -> None:
    login(page, "alpha")
    page.goto(f"/ui/jobs/{finished['id']}")
    funnel = page.get_by_role("table", name="Stage funnel")
    for stage in finished["stages"]:
        row = funnel.locator(f'tr[data-stage="{stage["stage"]}"]')
        expect(row.locator("[data-field=done]")).to_have_text(f"{stage['done']:,}")
    health = page.locator("#judge-health")
    comparisons = finished["selection"]["judge"]["comparisons"]
    expect(health).to_contain_text(f"of {comparisons:,} comparisons changed with the order")
    expect(page.get_by_role("table", name="Score histogram")).to_be_visible()
    expect(page.get_by_role("table", name="Selection methods compared")).to_contain_text(
        finished["selection"]["method"]
    )
    for dataset in finished["datasets"]:
        expect(page.get_by_role("link", name=dataset["path"], exact=True)).to_have_attribute(
            "href", f"/ui/jobs/{finished['id']}/files/{dataset['path']}"
        )
    # A download through the session matches the REST API's file.
    sft = next(d for d in finished["datasets"] if d["path"] == "data/sft.jsonl")
    body = page.request.get(f"/ui/jobs/{finished['id']}/files/{sft['path']}")
    assert body.status == 200 and len(body.body()) == sft["bytes"]
    page.get_by_role("link", name="Dataset card").click()
    expect(page.locator("#card-text")).to_contain_text("taxoforge")
    # The card's charts are SVG the browser draws (an image that fails has no natural width).
    charts = page.locator("figure img")
    expect(charts).to_have_count(2)
    for i in range(2):
        chart = charts.nth(i)
        assert chart.get_attribute("src", timeout=5000).endswith(".svg")
        chart.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=chart.element_handle()
        )


def test_a_record_shows_its_verdicts_in_both_orders(
    finished: dict[str, Any], page: Page, login: Callable[[Page, str], None]
) -> None:
    login(page, "alpha")
    page.goto(f"/ui/jobs/{finished['id']}/records?status=kept")
    kept = len(finished["kept"])
    expect(page.locator("#record-count")).to_contain_text(f"{kept} record")
    page.locator("table.records tbody tr a").first.click()
    expect(page.locator("#record-status")).to_contain_text("kept")
    comparison = page.locator("section.comparison").first
    expect(comparison.locator('[data-order="a-first"]')).to_contain_text("shown first")
    expect(comparison.locator('[data-order="b-first"]')).to_contain_text("shown first")
    expect(page.get_by_role("heading", name="Where it came from")).to_be_visible()
    expect(page.locator("dl.kv").first).to_contain_text("instruction template")


def test_dropped_records_filter_by_reason(
    finished: dict[str, Any], page: Page, login: Callable[[Page, str], None]
) -> None:
    login(page, "alpha")
    page.goto(f"/ui/jobs/{finished['id']}/records")
    everything = len(finished["kept"]) + sum(finished["drops"].values())
    expect(page.locator("#record-count")).to_contain_text(f"{everything} records match")
    page.get_by_label("Kept or dropped").select_option("dropped")
    page.get_by_label("Drop reason").select_option("not_selected")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"reason=not_selected"))
    dropped = finished["drops"]["not_selected"]
    expect(page.locator("#record-count")).to_contain_text(f"{dropped} record")
    statuses = page.locator("table.records tbody tr td:nth-child(2)").all_inner_texts()
    assert statuses == ["dropped: not_selected"] * dropped
    page.locator("table.records tbody tr a").first.click()
    expect(page.locator("#record-status")).to_contain_text("select: not_selected")


_UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
    .map(el => el.name || el.id)"""


def test_every_form_field_has_a_label(
    finished: dict[str, Any], page: Page, login: Callable[[Page, str], None]
) -> None:
    page.goto("/ui/login")
    assert page.evaluate(_UNLABELLED) == []
    login(page, "alpha")
    for path in ("/ui/jobs", f"/ui/jobs/{finished['id']}", f"/ui/jobs/{finished['id']}/records"):
        page.goto(path)
        assert page.evaluate(_UNLABELLED) == [], path


def test_another_tenants_job_and_records_do_not_exist(
    finished: dict[str, Any], page: Page, login: Callable[[Page, str], None]
) -> None:
    job_id = finished["id"]
    login(page, "beta")
    for path in (
        f"/ui/jobs/{job_id}",
        f"/ui/jobs/{job_id}/records",
        f"/ui/jobs/{job_id}/records/i0000000",
        f"/ui/jobs/{job_id}/events",
        f"/ui/jobs/{job_id}/card",
        f"/ui/jobs/{job_id}/files/data/sft.jsonl",
    ):
        assert page.request.get(path).status == 404, path
    assert page.request.post(f"/ui/jobs/{job_id}/cancel").status == 404
    page.goto("/ui/jobs")
    assert job_id not in page.content()
    # Without a session, a page asks for a key and shows nothing.
    page.context.clear_cookies()
    page.goto(f"/ui/jobs/{job_id}")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    assert job_id not in page.locator("main").inner_text()
