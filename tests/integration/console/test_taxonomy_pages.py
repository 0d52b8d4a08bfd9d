"""The console's taxonomy pages in a real browser: expand a node on the FAKE model, review
and accept a proposal, publish; the tree's keyboard navigation; the plan preview; and one
tenant's taxonomy hidden from another."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import Console

pytestmark = pytest.mark.integration

Login = Callable[[Page, str], None]


def _import(console: Console, tenant: str, taxonomy_id: str) -> None:
    document = textwrap.dedent(
        f"""\
        id: {taxonomy_id}
        version: "1"
        title: Small {taxonomy_id}
        nodes:
          - id: {taxonomy_id}-science
            title: Science
            kind: field
            children:
              - id: {taxonomy_id}-optics
                title: Optics
                kind: discipline
                weight: 3
                attributes:
                  key_concepts: [refraction, lenses]
              - id: {taxonomy_id}-geology
                title: Geology
                kind: discipline
          - id: {taxonomy_id}-cooking
            title: Cooking
            kind: discipline
        """
    )
    with console.api(tenant) as api:
        resp = api.post(
            "/v1/taxonomies", content=document, headers={"Content-Type": "application/yaml"}
        )
        assert resp.status_code == 201, resp.text


def _find(node: dict[str, Any], node_id: str) -> dict[str, Any] | None:
    if node["id"] == node_id:
        return node
    for child in node.get("children", []):
        found = _find(child, node_id)
        if found is not None:
            return found
    return None


def test_expand_a_node_review_its_proposals_and_publish(
    console: Console, page: Page, login: Login
) -> None:
    _import(console, "alpha", "grow")
    login(page, "alpha")
    page.goto("/ui/taxonomies")
    page.get_by_role("link", name="grow", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("version 1")

    page.get_by_label("Node to expand").select_option("grow-optics")
    page.get_by_label("Subject lists asked").fill("1")
    page.get_by_label("Subjects kept at most").fill("3")
    page.get_by_role("button", name="Start expansion").click()
    page.wait_for_url(re.compile(r"/ui/taxonomies/grow/expansions/j-[0-9a-f]+$"))
    # The page reads itself again until the job is over, then links to the review.
    review = page.get_by_role("link", name=re.compile("Review the proposals"))
    expect(review).to_be_visible(timeout=90_000)
    expect(page.locator("#expansion-state")).to_have_text("succeeded")
    review.click()

    page.wait_for_url(re.compile(r"/ui/taxonomies/grow/review\?version=2$"))
    subjects = page.locator("[data-proposal]").evaluate_all(
        "els => els.map(e => e.dataset.proposal)"
    )
    assert subjects and all(s.startswith("grow-optics-") for s in subjects), subjects
    keep, *drop = subjects
    page.locator(f"label[for='accept-{keep}']").click()
    for node_id in drop:
        page.locator(f"label[for='reject-{node_id}']").click()
    page.get_by_label(f"Title of {keep}").fill("Lens making")
    page.get_by_role("button", name="Publish new version").click()

    page.wait_for_url(re.compile(r"/ui/taxonomies/grow\?version=\d+&published=\d+$"))
    expect(page.get_by_role("status")).to_contain_text("Published version")
    item = page.locator(f"#node-{keep}")
    expect(item.locator(f"#label-{keep}")).to_have_text("Lens making")
    expect(item).not_to_have_attribute("data-proposed", "true")
    assert page.locator("[data-proposed]").count() == 0

    with console.api("alpha") as api:
        taxonomy = api.get("/v1/taxonomies/grow").json()
    kept = _find(taxonomy["root"], keep)
    assert kept is not None and kept["title"] == "Lens making"
    assert kept.get("status", "NODE_STATUS_ACCEPTED") == "NODE_STATUS_ACCEPTED"
    assert all(_find(taxonomy["root"], node_id) is None for node_id in drop)


def test_the_tree_is_navigated_with_the_keyboard(
    console: Console, page: Page, login: Login
) -> None:
    _import(console, "alpha", "keys")
    login(page, "alpha")
    page.goto("/ui/taxonomies/keys")
    tree = page.get_by_role("tree")
    expect(tree).to_be_visible()

    def focused() -> str:
        return str(page.evaluate("document.activeElement.dataset.nodeId || ''"))

    # Only one node is in the tab order: Tab from the version form's button reaches it.
    page.get_by_role("button", name="Show").focus()
    page.keyboard.press("Tab")
    assert focused() == "keys-science"
    science = page.locator("#node-keys-science")
    expect(science).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("ArrowDown")
    assert focused() == "keys-optics"
    page.keyboard.press("ArrowDown")
    assert focused() == "keys-geology"
    page.keyboard.press("ArrowLeft")  # a leaf: to its parent
    assert focused() == "keys-science"
    page.keyboard.press("ArrowLeft")  # an open node: closes it
    expect(science).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#node-keys-optics")).to_be_hidden()
    page.keyboard.press("ArrowDown")  # past the closed node's children
    assert focused() == "keys-cooking"
    page.keyboard.press("Home")
    assert focused() == "keys-science"
    page.keyboard.press("ArrowRight")  # opens
    expect(science).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("ArrowRight")  # into its first child
    assert focused() == "keys-optics"
    page.keyboard.press("End")
    assert focused() == "keys-cooking"
    assert page.locator('[role="treeitem"][tabindex="0"]').count() == 1


def test_a_plan_preview_counts_seeds_per_leaf_and_language(
    console: Console, page: Page, login: Login
) -> None:
    _import(console, "alpha", "plans")
    login(page, "alpha")
    page.goto("/ui/taxonomies/plans")
    page.get_by_label("Instructions").fill("20")
    page.get_by_label(re.compile("^Languages")).fill("en:0.5, fr:0.5")
    page.get_by_role("button", name="Preview plan").click()
    expect(page.get_by_role("heading", name=re.compile("20 seeds on version 1"))).to_be_visible()
    optics = page.locator("tr[data-leaf='plans-optics'] td")
    # Weights 3, 1, 1: optics has 12 of 20, split evenly between the two languages.
    expect(optics).to_have_text(["6", "6", "12"])
    assert page.locator("tr[data-leaf]").count() == 3

    page.get_by_label(re.compile("^Languages")).fill("en:0.5, xx")
    page.get_by_role("button", name="Preview plan").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown language 'xx'")
    expect(page.get_by_label(re.compile("^Languages"))).to_have_value("en:0.5, xx")


def test_another_tenant_cannot_open_a_private_taxonomy(
    console: Console, page: Page, login: Login
) -> None:
    _import(console, "alpha", "secret")
    login(page, "beta")
    for path in (
        "/ui/taxonomies/secret",
        "/ui/taxonomies/secret?version=1",
        "/ui/taxonomies/secret/review",
        "/ui/taxonomies/secret/plan?count=5",
    ):
        # Through beta's browser session (its cookie); a 404 document is not loaded in the
        # page, where Chromium would log it as a failed load.
        resp = page.request.get(path)
        assert resp.status == 404, path
        assert "secret-optics" not in resp.text()
    expand = page.request.post(
        "/ui/taxonomies/secret/expand",
        form={"node": "secret-optics", "levels": "1", "samples": "1", "max_children": "2"},
    )
    assert expand.status == 404
    review = page.request.post(
        "/ui/taxonomies/secret/review", form={"decision-secret-optics": "accept"}
    )
    assert review.status == 404
    page.goto("/ui/taxonomies")
    expect(page.locator("main")).not_to_contain_text("secret")
    expect(page.get_by_role("link", name="starter", exact=True)).to_be_visible()
    page.goto("/ui/jobs/new")
    assert "secret" not in page.locator("#taxonomy").inner_html()
