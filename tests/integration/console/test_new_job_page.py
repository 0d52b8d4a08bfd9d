"""The console's new-job form in a real browser: preview the plan, submit, land on the job's
page; a refused recipe comes back with its errors and everything typed."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from .conftest import Console

pytestmark = pytest.mark.integration

Login = Callable[[Page, str], None]


def test_submit_a_job_from_the_form_and_land_on_its_page(
    console: Console, page: Page, login: Login
) -> None:
    login(page, "alpha")
    page.goto("/ui/jobs/new")
    page.get_by_label("Job name").fill("from the form")
    page.get_by_label("Taxonomy", exact=True).select_option("starter")
    page.get_by_label("Instructions to generate").fill("4")
    page.get_by_label("Language 1", exact=True).select_option("en")
    page.get_by_label("Language 2", exact=True).select_option("fr")
    page.locator("label[for='difficulty-easy']").click()
    page.locator("label[for='difficulty-hard']").click()
    page.get_by_label("Judging mode").select_option("pairwise")
    page.get_by_label("Judge model").select_option("default")

    page.get_by_role("button", name="Preview plan").click()
    expect(page.get_by_role("heading", name=re.compile("Plan: 4 seeds"))).to_be_visible()
    # The preview comes back with the form as it was filled.
    expect(page.get_by_label("Job name")).to_have_value("from the form")
    expect(page.get_by_label("Language 2", exact=True)).to_have_value("fr")
    expect(page.locator("#difficulty-hard")).to_be_checked()
    expect(page.locator("#difficulty-medium")).not_to_be_checked()
    expect(page.get_by_label("Judging mode")).to_have_value("pairwise")
    assert page.locator("#plan thead th").all_inner_texts()[1:3] == ["en", "fr"]

    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"/ui/jobs/j-[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    with console.api("alpha") as api:
        job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["name"] == "from the form" and job["recipe"]["count"] == 4
    assert [lang["code"] for lang in job["recipe"]["languages"]] == ["en", "fr"]
    assert [d["name"] for d in job["recipe"]["difficulties"]] == ["easy", "hard"]
    assert job["recipe"]["judging"]["mode"] == "pairwise"
    with console.api("beta") as api:  # the job is alpha's
        assert api.get(f"/v1/jobs/{job_id}").status_code == 404


def test_a_refused_recipe_shows_why_and_keeps_what_was_typed(
    console: Console, page: Page, login: Login
) -> None:
    login(page, "beta")
    with console.api("beta") as api:
        before = len(api.get("/v1/jobs").json()["jobs"])
    page.goto("/ui/jobs/new")
    page.get_by_label("Job name").fill("shares off")
    page.get_by_label("Instructions to generate").fill("6")
    page.get_by_label("Language 1", exact=True).select_option("en")
    page.get_by_label("Share of language 1").fill("0.4")
    page.get_by_label("Language 2", exact=True).select_option("de")
    page.get_by_label("Share of language 2").fill("0.4")
    page.locator("label[for='strategy-glan']").click()
    page.get_by_role("button", name="Submit job").click()

    expect(page.get_by_role("alert")).to_contain_text("language shares sum to 0.8")
    assert re.search(r"/ui/jobs/new$", page.url)
    expect(page.get_by_label("Job name")).to_have_value("shares off")
    expect(page.get_by_label("Instructions to generate")).to_have_value("6")
    expect(page.get_by_label("Language 2", exact=True)).to_have_value("de")
    expect(page.get_by_label("Share of language 2")).to_have_value("0.4")
    expect(page.locator("#strategy-glan")).to_be_checked()

    page.get_by_label("Share of language 2").fill("0.6")
    page.get_by_label("Instructions to generate").fill("0")
    page.get_by_label("Instructions to generate").evaluate("el => el.removeAttribute('min')")
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#count-errors")).to_contain_text("greater than or equal to 1")
    with console.api("beta") as api:
        assert len(api.get("/v1/jobs").json()["jobs"]) == before  # nothing was submitted
