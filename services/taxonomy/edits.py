"""Edits and reviews: a tree in, a new tree out (the old version is never touched)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.taxonomy.document import SLUG
from services.taxonomy.tree import index, walk
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

__all__ = ["apply_edits", "apply_review"]

_OPS = ("add", "rename", "describe", "prune", "reweight", "set_attribute")


def _find(root: pb.TaxonomyNode, node_id: str) -> tuple[pb.TaxonomyNode, pb.TaxonomyNode | None]:
    if node_id == root.id:
        return root, None
    for located in walk(root):
        if located.node.id == node_id:
            parent = root if located.parent_id == root.id else _find(root, located.parent_id)[0]
            return located.node, parent
    raise NotFoundError(f"node {node_id!r} does not exist in taxonomy {root.id!r}")


def _check_new_ids(root: pb.TaxonomyNode, node: pb.TaxonomyNode) -> None:
    taken = set(index(root))
    for candidate in [node, *(loc.node for loc in walk(node))]:
        if not SLUG.match(candidate.id):
            raise PermanentError(f"id {candidate.id!r} must be a lowercase slug")
        if candidate.id in taken:
            raise PermanentError(f"id {candidate.id!r} is already used; ids are unique")
        if not candidate.title.strip():
            raise PermanentError(f"node {candidate.id!r} needs a title")
        taken.add(candidate.id)


def apply_edits(
    root: pb.TaxonomyNode, operations: Sequence[tpb.EditOperation], origin: str = "edit"
) -> pb.TaxonomyNode:
    """A copy of ``root`` with the operations applied in order.

    Raises:
        PermanentError / NotFoundError: naming the operation (by position) and the problem.
    """
    out = pb.TaxonomyNode()
    out.CopyFrom(root)
    if not operations:
        raise PermanentError("no operations: nothing to change")
    for i, op in enumerate(operations):
        where = f"operations[{i}] ({op.op} {op.node_id})"
        try:
            _apply(out, op, origin)
        except (PermanentError, NotFoundError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc
    return out


def _apply(root: pb.TaxonomyNode, op: tpb.EditOperation, origin: str) -> None:
    if op.op not in _OPS:
        raise PermanentError(f"unknown op {op.op!r}; one of {', '.join(_OPS)}")
    node, parent = _find(root, op.node_id)
    if op.op == "add":
        new = pb.TaxonomyNode()
        new.CopyFrom(op.node)
        for located in [new, *(loc.node for loc in walk(new))]:
            located.origin = located.origin or origin
            located.weight = located.weight or 1.0  # left out: the default
            if not (located.weight > 0 and math.isfinite(located.weight)):
                raise PermanentError(f"node {located.id!r}: weight must be > 0")
        _check_new_ids(root, new)
        node.children.append(new)
    elif op.op == "rename":
        if not op.title.strip():
            raise PermanentError("rename needs a title")
        node.title = op.title.strip()
    elif op.op == "describe":
        node.description = op.description.strip()
    elif op.op == "reweight":
        if not (op.weight > 0 and math.isfinite(op.weight)):
            raise PermanentError("weight must be > 0 (prune the node instead of zeroing it)")
        node.weight = op.weight
    elif op.op == "set_attribute":
        if not op.attribute:
            raise PermanentError("set_attribute needs an attribute name")
        if op.value.text or op.value.items:
            node.attributes[op.attribute].CopyFrom(op.value)
        else:
            node.attributes.pop(op.attribute, None)
    elif op.op == "prune":
        if parent is None:
            raise PermanentError("the root cannot be pruned; delete the taxonomy instead")
        _remove_child(parent, node.id)


def _remove_child(parent: pb.TaxonomyNode, node_id: str) -> None:
    kept = [c for c in parent.children if c.id != node_id]
    del parent.children[:]
    parent.children.extend(kept)


def apply_review(
    root: pb.TaxonomyNode, accept: Sequence[str], reject: Sequence[str], accept_rest: bool
) -> tuple[pb.TaxonomyNode, int, int]:
    """A copy with proposed nodes accepted or removed; returns (tree, accepted, rejected).

    Rejecting a node removes its subtree; accepting a node also accepts its proposed parents
    (an accepted node is never under a proposed one) and what was proposed under it (a
    subject's syllabus comes with the subject).
    """
    out = pb.TaxonomyNode()
    out.CopyFrom(root)
    nodes = index(out)
    both = set(accept) & set(reject)
    if both:
        raise PermanentError(f"nodes both accepted and rejected: {sorted(both)}")
    for node_id in [*accept, *reject]:
        if node_id not in nodes:
            raise NotFoundError(f"node {node_id!r} does not exist in taxonomy {root.id!r}")
        if nodes[node_id].node.status != pb.NODE_STATUS_PROPOSED:
            raise PermanentError(f"node {node_id!r} is not awaiting review")
    accepted = rejected = 0
    for node_id in reject:
        nodes = index(out)  # each removal changes the tree: look it up afresh
        if node_id not in nodes:
            continue  # already gone with a rejected ancestor
        parent = nodes[nodes[node_id].parent_id].node
        _remove_child(parent, node_id)
        rejected += 1
    nodes = index(out)
    gone = [node_id for node_id in accept if node_id not in nodes]
    if gone:
        raise PermanentError(
            f"cannot accept {', '.join(gone)}: under a rejected node (reject less, or accept less)"
        )
    chosen = set(accept)
    if accept_rest:
        chosen |= {i for i, loc in nodes.items() if loc.node.status == pb.NODE_STATUS_PROPOSED}
    for node_id in sorted(chosen):
        current = node_id
        while current in nodes and nodes[current].node.status == pb.NODE_STATUS_PROPOSED:
            nodes[current].node.status = pb.NODE_STATUS_ACCEPTED
            accepted += 1
            current = nodes[current].parent_id
        for below in walk(nodes[node_id].node):
            if below.node.status == pb.NODE_STATUS_PROPOSED:
                below.node.status = pb.NODE_STATUS_ACCEPTED
                accepted += 1
    return out, accepted, rejected
