"""The taxonomy pages' pure parts: the tree's view, the review form, the plan table, and the
templates rendered with them (no network)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from gateway.ui.render import render
from gateway.ui.taxonomies import (
    ReviewFormError,
    find_node,
    parse_languages,
    plan_table,
    proposals,
    review_plan,
    tree_view,
)
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

PROPOSED = pb.NODE_STATUS_PROPOSED


def _node(node_id: str, *children: pb.TaxonomyNode, **fields: Any) -> pb.TaxonomyNode:
    fields.setdefault("title", node_id.title())
    fields.setdefault("weight", 1.0)
    return pb.TaxonomyNode(id=node_id, children=list(children), **fields)


def _root() -> pb.TaxonomyNode:
    optics = _node(
        "optics",
        _node(
            "lenses",
            _node("s1", kind="session", status=PROPOSED),
            _node("s2", kind="session", status=PROPOSED),
            kind="subject",
            status=PROPOSED,
        ),
        _node("waves", kind="subject", status=PROPOSED),
        weight=3.0,
        kind="discipline",
    )
    optics.attributes["key_concepts"].items.extend(["refraction", "lenses"])
    optics.attributes["level"].text = "intro"
    cooking = _node(
        "cooking",
        _node("baking", weight=2.0),
        _node("grilling", _node("g1", kind="session"), weight=1.0),
        weight=5.0,  # an inner node's own weight plans nothing: its leaves' do
    )
    return _node("t", optics, cooking)


def test_tree_view_gives_weights_shares_depths_and_attributes() -> None:
    nodes = tree_view(_root())
    optics, cooking = nodes
    # Weighted plans go by planning leaves: optics (its subjects are only proposed), baking
    # and grilling (a subject whose only children are sessions).
    assert (optics.share, cooking.share) == (0.5, 0.5)
    assert [n.share for n in cooking.walk()] == [0.5, 2 / 6, 1 / 6, None]
    assert optics.attributes == [("key_concepts", "refraction, lenses"), ("level", "intro")]
    assert [n.depth for n in optics.walk()] == [1, 2, 3, 3, 2]
    assert [n.id for n in nodes[1].walk()] == ["cooking", "baking", "grilling", "g1"]
    assert not optics.proposed and optics.children[0].proposed
    assert cooking.children[0].leaf and not optics.leaf
    lenses = find_node(nodes, "lenses")
    assert lenses is not None and lenses.share is None and lenses.children[1].share is None
    assert find_node(nodes, "nowhere") is None


def test_proposals_are_the_topmost_proposed_nodes() -> None:
    assert [n.id for n in proposals(tree_view(_root()))] == ["lenses", "waves"]


def test_a_review_form_accepts_rejects_and_renames() -> None:
    form = {
        "decision-lenses": "accept",
        "decision-s2": "reject",
        "decision-waves": "",
        "title-lenses": "  Lens design ",
        "title-s1": "S1",  # unchanged: no rename
        "title-waves": "Waves",
        "decision-optics": "reject",  # not a proposal: not reviewable here
        "title-optics": "Renamed",  # nor renamed from this form
    }
    plan = review_plan(form, tree_view(_root()))
    assert plan.accept == ["lenses"] and plan.reject == ["s2"]
    assert plan.renames == [("lenses", "Lens design")]
    assert plan.reviews and not plan.accept_rest


def test_what_is_under_a_rejected_node_goes_with_it() -> None:
    form = {
        "decision-lenses": "reject",
        "decision-s1": "accept",
        "title-s2": "New title of a pruned session",
        "accept_rest": "on",
    }
    plan = review_plan(form, tree_view(_root()))
    assert plan.reject == ["lenses"] and plan.accept == [] and plan.renames == []
    assert plan.accept_rest


def test_renames_alone_are_a_review() -> None:
    plan = review_plan({"title-waves": "Wave optics"}, tree_view(_root()))
    assert plan.renames == [("waves", "Wave optics")] and not plan.reviews


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "nothing to publish"),
        ({"decision-waves": "", "title-waves": "Waves"}, "nothing to publish"),
        ({"decision-waves": "accept", "title-waves": "  "}, "waves: a title cannot be empty"),
    ],
)
def test_a_review_form_that_does_nothing_or_empties_a_title_is_refused(
    form: dict[str, str], message: str
) -> None:
    with pytest.raises(ReviewFormError, match=message):
        review_plan(form, tree_view(_root()))


def _plan() -> tpb.PlanJobResponse:
    return tpb.PlanJobResponse(
        planned=10,
        taxonomy_version="3",
        cells=[
            tpb.PlanCell(node_id="optics", language="en", count=4),
            tpb.PlanCell(node_id="optics", language="fr", count=2),
            tpb.PlanCell(node_id="cooking", language="fr", count=3),
            tpb.PlanCell(node_id="cooking", language="en", count=1),
        ],
        totals=[
            tpb.PlanCount(dimension="language", value="en", count=5),
            tpb.PlanCount(dimension="difficulty", value="easy", count=6),
            tpb.PlanCount(dimension="difficulty", value="hard", count=4),
        ],
    )


def test_a_plan_is_pivoted_to_leaves_by_languages() -> None:
    table = plan_table(_plan(), {"optics": "Optics"})
    assert table.languages == ["en", "fr"]
    assert [(r.node_id, r.title, r.counts, r.total) for r in table.rows] == [
        ("optics", "Optics", [4, 2], 6),
        ("cooking", "cooking", [1, 3], 4),
    ]
    assert table.language_totals == [5, 5] and table.planned == 10
    assert table.totals == {"difficulty": [("easy", 6), ("hard", 4)]}


def test_languages_are_read_with_optional_shares() -> None:
    assert parse_languages(" en, fr:0.25 ;de:0.75,, ") == [
        {"code": "en"},
        {"code": "fr", "share": 0.25},
        {"code": "de", "share": 0.75},
    ]
    with pytest.raises(ValueError, match="a share is a number"):
        parse_languages("en:half")


def request() -> Request:
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(auth="keys")))
    return Request({"type": "http", "app": app, "method": "GET", "path": "/ui", "headers": []})


def _taxonomy() -> pb.Taxonomy:
    return pb.Taxonomy(id="t", version="2", title="<b>T</b>", root=_root(), change="expansion")


def test_the_tree_page_is_an_aria_tree_with_only_the_first_node_in_the_tab_order() -> None:
    nodes = tree_view(_root())
    page = bytes(
        render(
            request(),
            "taxonomy.html",
            taxonomy=_taxonomy(),
            versions=[pb.TaxonomyVersionInfo(version="1"), pb.TaxonomyVersionInfo(version="2")],
            latest="2",
            nodes=nodes,
            proposed=4,
            expandable=[n for top in nodes for n in top.walk()],
            expand_error="",
            expand_values={},
            notice="",
        ).body
    ).decode()
    assert 'role="tree"' in page and page.count('role="treeitem"') == 9
    assert page.count('tabindex="0"') == 1 and 'id="node-optics"' in page
    assert page.count('role="group"') == 4 and 'aria-expanded="true"' in page
    assert "&lt;b&gt;T&lt;/b&gt;" in page  # autoescaped
    assert "/ui/taxonomies/t/review?version=2" in page
    assert "refraction, lenses" in page and "50.0% of a weighted plan" in page


def test_the_review_page_keeps_what_was_chosen_and_typed() -> None:
    page = bytes(
        render(
            request(),
            "taxonomy_review.html",
            taxonomy=_taxonomy(),
            proposals=proposals(tree_view(_root())),
            form={"decision-waves": "reject", "title-lenses": "Typed title"},
            error="something",
        ).body
    ).decode()
    assert 'id="reject-waves" name="decision-waves" value="reject" checked' in page
    assert 'id="later-lenses" name="decision-lenses" value="" checked' in page
    assert 'value="Typed title"' in page and 'role="alert"' in page
    assert 'for="title-s1"' in page  # a session under a subject is reviewed too


def test_the_plan_page_shows_the_table() -> None:
    page = bytes(
        render(
            request(),
            "taxonomy_plan.html",
            taxonomy=_taxonomy(),
            count="10",
            languages="en, fr",
            table=plan_table(_plan(), {}),
            error="",
        ).body
    ).decode()
    assert 'data-leaf="optics"' in page and "10 seeds on version 3" in page
