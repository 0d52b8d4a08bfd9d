"""Edits and reviews: a copy of the tree with the change, the original untouched."""

from __future__ import annotations

import pytest

from services.taxonomy.edits import apply_edits, apply_review
from services.taxonomy.tree import digest, index, walk
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

PROPOSED = pb.NODE_STATUS_PROPOSED
ACCEPTED = pb.NODE_STATUS_ACCEPTED


def _node(node_id: str, *children: pb.TaxonomyNode, **fields: object) -> pb.TaxonomyNode:
    node = pb.TaxonomyNode(id=node_id, title=node_id.upper(), weight=1.0, origin="file", **fields)
    node.children.extend(children)
    return node


def _tree() -> pb.TaxonomyNode:
    """root > science > (physics, chemistry), art."""
    return _node("root", _node("science", _node("physics"), _node("chemistry")), _node("art"))


def _ids(root: pb.TaxonomyNode) -> list[str]:
    return [loc.node.id for loc in walk(root)]


def _op(op: str, node_id: str, **fields: object) -> tpb.EditOperation:
    return tpb.EditOperation(op=op, node_id=node_id, **fields)


# ---- apply_edits ----


def test_add_appends_a_child_with_its_subtree() -> None:
    new = _node("biology", _node("genetics"), _node("ecology"))
    new.origin = ""
    new.children[0].origin = ""

    out = apply_edits(_tree(), [_op("add", "science", node=new)])

    assert _ids(out) == [
        "science",
        "physics",
        "chemistry",
        "biology",
        "genetics",
        "ecology",
        "art",
    ]
    found = index(out)
    assert found["biology"].parent_id == "science"
    assert found["genetics"].path == ("SCIENCE", "BIOLOGY", "GENETICS")


def test_add_sets_the_origin_and_a_default_weight() -> None:
    new = pb.TaxonomyNode(id="biology", title="Biology")
    new.children.add(id="genetics", title="Genetics")
    new.children.add(id="ecology", title="Ecology", origin="expansion:j1", weight=3)

    out = apply_edits(_tree(), [_op("add", "science", node=new)], origin="edit:alice")

    found = index(out)
    assert found["biology"].node.origin == "edit:alice"
    assert found["genetics"].node.origin == "edit:alice"
    assert found["ecology"].node.origin == "expansion:j1"  # an origin given is kept
    assert found["biology"].node.weight == 1.0
    assert found["genetics"].node.weight == 1.0
    assert found["ecology"].node.weight == 3.0


def test_add_under_the_root_uses_the_taxonomy_id() -> None:
    out = apply_edits(_tree(), [_op("add", "root", node=pb.TaxonomyNode(id="law", title="Law"))])

    assert [c.id for c in out.children] == ["science", "art", "law"]
    assert out.children[-1].origin == "edit"


@pytest.mark.parametrize("clash", ["physics", "root", "art"])
def test_add_refuses_an_id_already_in_use(clash: str) -> None:
    new = pb.TaxonomyNode(id="fresh", title="Fresh")
    new.children.add(id=clash, title="Clash")

    with pytest.raises(PermanentError, match=rf"id '{clash}' is already used"):
        apply_edits(_tree(), [_op("add", "science", node=new)])


def test_add_refuses_the_same_id_twice_in_the_new_subtree() -> None:
    new = pb.TaxonomyNode(id="fresh", title="Fresh")
    new.children.add(id="twin", title="Twin")
    new.children.add(id="twin", title="Twin again")

    with pytest.raises(PermanentError, match="id 'twin' is already used"):
        apply_edits(_tree(), [_op("add", "art", node=new)])


@pytest.mark.parametrize("bad", ["Bad_Slug", "", "has space", "-dash"])
def test_add_refuses_a_bad_slug(bad: str) -> None:
    with pytest.raises(PermanentError, match="must be a lowercase slug"):
        apply_edits(_tree(), [_op("add", "art", node=pb.TaxonomyNode(id=bad, title="X"))])


def test_add_refuses_a_node_without_a_title() -> None:
    with pytest.raises(PermanentError, match="node 'untitled' needs a title"):
        apply_edits(_tree(), [_op("add", "art", node=pb.TaxonomyNode(id="untitled", title=" "))])


@pytest.mark.parametrize("weight", [-2.0, float("inf"), float("nan")])
def test_add_refuses_a_weight_that_is_not_positive_and_finite(weight: float) -> None:
    new = pb.TaxonomyNode(id="fresh", title="Fresh", weight=weight)

    with pytest.raises(PermanentError, match="weight"):
        apply_edits(_tree(), [_op("add", "art", node=new)])


def test_rename_strips_the_title() -> None:
    out = apply_edits(_tree(), [_op("rename", "physics", title="  Physics and Optics ")])

    assert index(out)["physics"].node.title == "Physics and Optics"


def test_rename_refuses_a_blank_title() -> None:
    with pytest.raises(PermanentError, match=r"operations\[0\] \(rename art\): rename needs"):
        apply_edits(_tree(), [_op("rename", "art", title="   ")])


def test_rename_of_the_root_is_allowed() -> None:
    out = apply_edits(_tree(), [_op("rename", "root", title="Everything")])

    assert out.title == "Everything"


def test_describe_sets_and_clears_the_description() -> None:
    described = apply_edits(_tree(), [_op("describe", "art", description=" Painting. ")])
    cleared = apply_edits(described, [_op("describe", "art", description="")])

    assert index(described)["art"].node.description == "Painting."
    assert index(cleared)["art"].node.description == ""


def test_reweight_sets_the_weight() -> None:
    out = apply_edits(_tree(), [_op("reweight", "chemistry", weight=2.5)])

    assert index(out)["chemistry"].node.weight == 2.5


@pytest.mark.parametrize("weight", [0.0, -1.0, float("inf"), float("nan")])
def test_reweight_refuses_a_weight_that_is_not_positive(weight: float) -> None:
    with pytest.raises(PermanentError, match="weight must be > 0"):
        apply_edits(_tree(), [_op("reweight", "chemistry", weight=weight)])


def test_set_attribute_sets_a_text_or_a_list() -> None:
    out = apply_edits(
        _tree(),
        [
            _op("set_attribute", "physics", attribute="guidance", value={"text": "Be concrete."}),
            _op("set_attribute", "physics", attribute="tags", value={"items": ["a", "b"]}),
        ],
    )

    attributes = index(out)["physics"].node.attributes
    assert attributes["guidance"].text == "Be concrete."
    assert list(attributes["tags"].items) == ["a", "b"]


def test_set_attribute_replaces_a_value() -> None:
    first = apply_edits(
        _tree(), [_op("set_attribute", "art", attribute="tags", value={"items": ["a", "b"]})]
    )
    second = apply_edits(
        first, [_op("set_attribute", "art", attribute="tags", value={"items": ["c"]})]
    )

    assert list(index(second)["art"].node.attributes["tags"].items) == ["c"]


def test_set_attribute_with_an_empty_value_clears_it() -> None:
    with_tag = apply_edits(
        _tree(), [_op("set_attribute", "art", attribute="tags", value={"items": ["a"]})]
    )

    cleared = apply_edits(with_tag, [_op("set_attribute", "art", attribute="tags")])
    absent = apply_edits(_tree(), [_op("set_attribute", "art", attribute="never-set")])

    assert "tags" not in index(cleared)["art"].node.attributes
    assert "never-set" not in index(absent)["art"].node.attributes


def test_set_attribute_needs_a_name() -> None:
    with pytest.raises(PermanentError, match="set_attribute needs an attribute name"):
        apply_edits(_tree(), [_op("set_attribute", "art", value={"text": "x"})])


def test_prune_removes_the_subtree() -> None:
    out = apply_edits(_tree(), [_op("prune", "science")])

    assert _ids(out) == ["art"]


def test_prune_of_a_nested_node_keeps_its_siblings_in_order() -> None:
    out = apply_edits(_tree(), [_op("prune", "physics")])

    assert _ids(out) == ["science", "chemistry", "art"]


def test_prune_refuses_the_root() -> None:
    with pytest.raises(PermanentError, match="the root cannot be pruned"):
        apply_edits(_tree(), [_op("prune", "root")])


def test_operations_apply_in_order() -> None:
    out = apply_edits(
        _tree(),
        [
            _op("add", "art", node=pb.TaxonomyNode(id="music", title="Music")),
            _op("rename", "music", title="Music Theory"),
            _op("reweight", "music", weight=3),
            _op("prune", "physics"),
        ],
    )

    assert _ids(out) == ["science", "chemistry", "art", "music"]
    music = index(out)["music"].node
    assert (music.title, music.weight) == ("Music Theory", 3.0)


def test_unknown_op_is_refused_naming_the_operation() -> None:
    with pytest.raises(PermanentError, match=r"operations\[1\] \(frobnicate art\): unknown op"):
        apply_edits(_tree(), [_op("rename", "art", title="Arts"), _op("frobnicate", "art")])


def test_unknown_node_is_not_found_naming_the_operation() -> None:
    with pytest.raises(NotFoundError) as caught:
        apply_edits(_tree(), [_op("rename", "art", title="Arts"), _op("prune", "nope")])

    assert str(caught.value) == (
        "operations[1] (prune nope): node 'nope' does not exist in taxonomy 'root'"
    )


def test_adding_under_an_unknown_parent_is_not_found() -> None:
    with pytest.raises(NotFoundError, match=r"operations\[0\] \(add nope\)"):
        apply_edits(_tree(), [_op("add", "nope", node=pb.TaxonomyNode(id="x", title="X"))])


def test_no_operations_is_refused() -> None:
    with pytest.raises(PermanentError, match="no operations"):
        apply_edits(_tree(), [])


def test_apply_edits_never_changes_its_input() -> None:
    root = _tree()
    before = root.SerializeToString(deterministic=True)

    apply_edits(
        root,
        [
            _op("add", "science", node=pb.TaxonomyNode(id="biology", title="Biology")),
            _op("rename", "art", title="Arts"),
            _op("describe", "physics", description="Forces."),
            _op("reweight", "chemistry", weight=2),
            _op("set_attribute", "art", attribute="tags", value={"items": ["x"]}),
            _op("prune", "physics"),
        ],
    )
    with pytest.raises(NotFoundError):
        apply_edits(root, [_op("rename", "art", title="Arts"), _op("prune", "nope")])

    assert root.SerializeToString(deterministic=True) == before


# ---- apply_review ----


def _proposals() -> pb.TaxonomyNode:
    """root > science > (physics, algebra? > (algebra-s01?, algebra-s02?)), geo? > geo-a?, art."""
    return _node(
        "root",
        _node(
            "science",
            _node("physics"),
            _node(
                "algebra",
                _node("algebra-s01", kind="session", status=PROPOSED),
                _node("algebra-s02", kind="session", status=PROPOSED),
                status=PROPOSED,
            ),
        ),
        _node("geo", _node("geo-a", status=PROPOSED), status=PROPOSED),
        _node("art"),
    )


def _proposed(root: pb.TaxonomyNode) -> list[str]:
    return [loc.node.id for loc in walk(root) if loc.node.status == PROPOSED]


def test_reject_removes_the_subtree() -> None:
    out, accepted, rejected = apply_review(_proposals(), [], ["algebra"], False)

    assert _ids(out) == ["science", "physics", "geo", "geo-a", "art"]
    assert (accepted, rejected) == (0, 1)


def test_accept_marks_the_node_and_what_was_proposed_under_it() -> None:
    out, accepted, rejected = apply_review(_proposals(), ["algebra"], [], False)

    assert _proposed(out) == ["geo", "geo-a"]
    assert (accepted, rejected) == (3, 0)
    assert _ids(out) == _ids(_proposals())


def test_accept_marks_the_proposed_ancestors() -> None:
    out, accepted, _ = apply_review(_proposals(), ["geo-a"], [], False)

    assert _proposed(out) == ["algebra", "algebra-s01", "algebra-s02"]
    assert accepted == 2


def test_accepting_a_node_and_its_parent_counts_each_once() -> None:
    out, accepted, _ = apply_review(_proposals(), ["geo", "geo-a", "algebra-s02"], [], False)

    assert accepted == 4  # geo, geo-a, algebra-s02 and its parent algebra
    # a parent accepted on the way up does not bring its other proposals along
    assert _proposed(out) == ["algebra-s01"]


def test_accept_rest_accepts_all_that_is_not_rejected() -> None:
    out, accepted, rejected = apply_review(_proposals(), [], ["geo"], True)

    assert _proposed(out) == []
    assert _ids(out) == ["science", "physics", "algebra", "algebra-s01", "algebra-s02", "art"]
    assert (accepted, rejected) == (3, 1)


def test_a_node_that_is_not_proposed_cannot_be_reviewed() -> None:
    with pytest.raises(PermanentError, match="node 'physics' is not awaiting review"):
        apply_review(_proposals(), ["physics"], [], False)
    with pytest.raises(PermanentError, match="node 'art' is not awaiting review"):
        apply_review(_proposals(), [], ["art"], False)


def test_a_node_cannot_be_accepted_and_rejected() -> None:
    with pytest.raises(PermanentError, match=r"both accepted and rejected: \['geo'\]"):
        apply_review(_proposals(), ["geo", "algebra"], ["geo"], False)


def test_reviewing_an_unknown_node_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="node 'nope' does not exist in taxonomy 'root'"):
        apply_review(_proposals(), [], ["nope"], False)


def test_apply_review_never_changes_its_input() -> None:
    root = _proposals()
    before = digest(root)

    apply_review(root, ["algebra"], ["geo"], True)

    assert digest(root) == before


def test_rejecting_nodes_under_different_parents_removes_them_all() -> None:
    out, _, rejected = apply_review(_proposals(), [], ["geo", "algebra"], False)

    assert _ids(out) == ["science", "physics", "art"]
    assert rejected == 2


def test_accepting_inside_a_rejected_subtree_is_refused() -> None:
    with pytest.raises(PermanentError):
        apply_review(_proposals(), ["geo-a"], ["geo"], False)
