"""Walking taxonomy trees: order, lookups, planning leaves, syllabi, counts and digests."""

from __future__ import annotations

import pytest

from services.taxonomy.plan import plan_job
from services.taxonomy.tree import SESSION, counts, digest, index, planning_leaves, syllabus, walk
from taxoforge.v1 import common_pb2 as pb

PROPOSED = pb.NODE_STATUS_PROPOSED


def _node(node_id: str, *children: pb.TaxonomyNode, **fields: object) -> pb.TaxonomyNode:
    node = pb.TaxonomyNode(id=node_id, title=node_id.upper(), weight=1.0, **fields)
    node.children.extend(children)
    return node


def _session(node_id: str, *concepts: str, **fields: object) -> pb.TaxonomyNode:
    node = _node(node_id, kind=SESSION, **fields)
    if concepts:
        node.attributes["key_concepts"].items.extend(concepts)
    return node


def _tree() -> pb.TaxonomyNode:
    """root > a > (a1, a2 > (a2x, a2y)), b, c (proposed) > c1 (proposed)."""
    return _node(
        "root",
        _node("a", _node("a1"), _node("a2", _node("a2x"), _node("a2y"))),
        _node("b"),
        _node("c", _node("c1", status=PROPOSED), status=PROPOSED),
    )


# ---- walk and index ----


def test_walk_visits_parents_before_children_in_document_order() -> None:
    assert [loc.node.id for loc in walk(_tree())] == [
        "a",
        "a1",
        "a2",
        "a2x",
        "a2y",
        "b",
        "c",
        "c1",
    ]


def test_walk_gives_parent_ids_and_title_paths() -> None:
    found = {loc.node.id: (loc.parent_id, loc.path) for loc in walk(_tree())}

    assert found["a"] == ("root", ("A",))
    assert found["a2"] == ("a", ("A", "A2"))
    assert found["a2y"] == ("a2", ("A", "A2", "A2Y"))
    assert found["c1"] == ("c", ("C", "C1"))


def test_walk_of_a_lone_root_is_empty() -> None:
    assert list(walk(_node("root"))) == []


def test_index_holds_every_node_and_the_root() -> None:
    found = index(_tree())

    assert set(found) == {"root", "a", "a1", "a2", "a2x", "a2y", "b", "c", "c1"}
    assert found["root"].parent_id == ""
    assert found["root"].path == ()
    assert found["root"].node.id == "root"
    assert found["a2x"].path == ("A", "A2", "A2X")


def test_index_entries_are_the_tree_nodes_themselves() -> None:
    root = _tree()

    index(root)["b"].node.title = "Renamed"

    assert root.children[1].title == "Renamed"


# ---- planning leaves ----


def test_planning_leaves_are_the_accepted_leaves_with_paths() -> None:
    got = [(leaf.id, path) for leaf, path in planning_leaves(_tree())]

    assert got == [
        ("a1", ("A", "A1")),
        ("a2x", ("A", "A2", "A2X")),
        ("a2y", ("A", "A2", "A2Y")),
        ("b", ("B",)),
    ]


def test_proposed_nodes_and_their_subtrees_are_skipped() -> None:
    root = _node("root", _node("a", _node("a1"), status=PROPOSED), _node("b"))

    assert [leaf.id for leaf, _ in planning_leaves(root)] == ["b"]


def test_a_node_whose_children_are_all_proposed_is_a_leaf() -> None:
    root = _node("root", _node("a", _node("a1", status=PROPOSED)))

    assert [leaf.id for leaf, _ in planning_leaves(root)] == ["a"]


def test_planning_leaves_start_below_a_given_node_with_its_path() -> None:
    a = _tree().children[0]

    got = [(leaf.id, path) for leaf, path in planning_leaves(a, ("A",))]

    assert got == [
        ("a1", ("A", "A1")),
        ("a2x", ("A", "A2", "A2X")),
        ("a2y", ("A", "A2", "A2Y")),
    ]


def test_a_start_without_children_is_its_own_leaf() -> None:
    b = _node("b")

    assert planning_leaves(b, ("B",)) == [(b, ("B",))]


def test_sessions_are_never_leaves_and_their_subject_is_one() -> None:
    subject = _node("subject", _session("subject-s01", "x"), _session("subject-s02", "y"))
    root = _node("root", _node("discipline", subject, _node("other")))

    got = [(leaf.id, path) for leaf, path in planning_leaves(root)]

    assert got == [
        ("subject", ("DISCIPLINE", "SUBJECT")),
        ("other", ("DISCIPLINE", "OTHER")),
    ]


def test_a_subject_with_sessions_and_sub_subjects_plans_on_the_sub_subjects() -> None:
    subject = _node("subject", _session("subject-s01"), _node("part"))

    assert [leaf.id for leaf, _ in planning_leaves(_node("root", subject))] == ["part"]


# ---- syllabus ----


def test_syllabus_lists_accepted_sessions_with_key_concepts() -> None:
    subject = _node(
        "subject",
        _session("s1", "limits", "continuity"),
        _node("not-a-session"),
        _session("s2", "derivatives"),
        _session("s3", "integrals", status=PROPOSED),
    )

    got = syllabus(subject)

    assert got == [
        pb.Session(title="S1", key_concepts=["limits", "continuity"]),
        pb.Session(title="S2", key_concepts=["derivatives"]),
    ]


def test_syllabus_of_a_node_without_sessions_is_empty() -> None:
    assert syllabus(_node("a", _node("b"))) == []


def test_a_session_without_key_concepts_has_an_empty_list() -> None:
    assert syllabus(_node("subject", _session("s1"))) == [pb.Session(title="S1")]


def test_syllabus_does_not_change_the_tree() -> None:
    root = _node("root", _node("subject", _session("subject-s01")))
    before = digest(root)

    syllabus(root.children[0])
    plan_job(pb.Recipe(count=2), pb.Taxonomy(id="root", root=root), "job-1")

    assert digest(root) == before
    assert "key_concepts" not in root.children[0].children[0].attributes


# ---- counts and digest ----


def test_counts_are_nodes_leaves_and_proposed() -> None:
    assert counts(_tree()) == (8, 4, 2)


def test_counts_count_sessions_as_nodes_but_not_as_leaves() -> None:
    root = _node("root", _node("subject", _session("s1"), _session("s2", status=PROPOSED)))

    assert counts(root) == (3, 1, 1)


def test_counts_of_an_empty_or_all_proposed_tree_have_no_leaves() -> None:
    assert counts(_node("root")) == (0, 0, 0)
    assert counts(_node("root", _node("a", status=PROPOSED))) == (1, 0, 1)


def test_digest_is_stable_for_equal_trees() -> None:
    assert digest(_tree()) == digest(_tree())
    assert len(digest(_tree())) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda r: setattr(r.children[1], "title", "Other"),
        lambda r: setattr(r.children[1], "weight", 2.0),
        lambda r: setattr(r.children[1], "description", "now described"),
        lambda r: setattr(r.children[2], "status", pb.NODE_STATUS_ACCEPTED),
        lambda r: r.children[1].attributes["tags"].items.append("x"),
        lambda r: r.children[1].children.add(id="b1", title="B1"),
    ],
    ids=["title", "weight", "description", "status", "attribute", "child"],
)
def test_digest_changes_when_the_content_changes(change) -> None:
    root = _tree()
    before = digest(root)

    change(root)

    assert digest(root) != before
