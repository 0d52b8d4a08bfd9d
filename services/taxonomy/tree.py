"""Walking a taxonomy tree: planning leaves, syllabi, lookups, content digests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "SESSION",
    "Located",
    "attribute_items",
    "attribute_text",
    "counts",
    "digest",
    "index",
    "planning_leaves",
    "syllabus",
    "walk",
]

# A syllabus entry of a subject: carried on the subject's seeds, never a planning leaf.
SESSION = "session"


@dataclass(frozen=True)
class Located:
    """A node with its parent's id and the titles from the top level down to it."""

    node: pb.TaxonomyNode
    parent_id: str
    path: tuple[str, ...]


def walk(root: pb.TaxonomyNode) -> Iterator[Located]:
    """Every node below ``root`` (not ``root`` itself), parents before children."""
    stack: list[tuple[pb.TaxonomyNode, str, tuple[str, ...]]] = [
        (child, root.id, (child.title,)) for child in reversed(root.children)
    ]
    while stack:
        node, parent_id, path = stack.pop()
        yield Located(node, parent_id, path)
        for child in reversed(node.children):
            stack.append((child, node.id, (*path, child.title)))


def index(root: pb.TaxonomyNode) -> dict[str, Located]:
    """Every node by id; the root too, under its own id."""
    found = {root.id: Located(root, "", ())}
    for located in walk(root):
        found[located.node.id] = located
    return found


def _in_use(node: pb.TaxonomyNode) -> list[pb.TaxonomyNode]:
    return [c for c in node.children if c.status == pb.NODE_STATUS_ACCEPTED and c.kind != SESSION]


def planning_leaves(
    start: pb.TaxonomyNode, path: tuple[str, ...] = ()
) -> list[tuple[pb.TaxonomyNode, tuple[str, ...]]]:
    """The nodes seeds are planned on, under ``start`` (which is one if it has none below).

    Proposed nodes (awaiting review) and syllabus sessions are not planned on: a subject whose
    only children are sessions is a leaf, and its seeds carry the syllabus.
    """
    children = _in_use(start)
    if not children:
        return [(start, path)]
    out: list[tuple[pb.TaxonomyNode, tuple[str, ...]]] = []
    for child in children:
        out.extend(planning_leaves(child, (*path, child.title)))
    return out


def attribute_text(node: pb.TaxonomyNode, name: str) -> str:
    """An attribute's text ("" if absent); reading never adds the attribute to the node."""
    return node.attributes[name].text if name in node.attributes else ""


def attribute_items(node: pb.TaxonomyNode, name: str) -> list[str]:
    """An attribute's list ([] if absent); reading never adds the attribute to the node."""
    return list(node.attributes[name].items) if name in node.attributes else []


def syllabus(node: pb.TaxonomyNode) -> list[pb.Session]:
    """A subject's class sessions with their key concepts."""
    return [
        pb.Session(title=c.title, key_concepts=attribute_items(c, "key_concepts"))
        for c in node.children
        if c.kind == SESSION and c.status == pb.NODE_STATUS_ACCEPTED
    ]


def counts(root: pb.TaxonomyNode) -> tuple[int, int, int]:
    """(nodes, planning leaves, proposed nodes) below the root."""
    nodes = proposed = 0
    for located in walk(root):
        nodes += 1
        proposed += located.node.status == pb.NODE_STATUS_PROPOSED
    leaves = len(planning_leaves(root)) if _in_use(root) else 0
    return nodes, leaves, proposed


def digest(root: pb.TaxonomyNode) -> str:
    """sha256 of the tree's content (deterministic serialization)."""
    return hashlib.sha256(root.SerializeToString(deterministic=True)).hexdigest()
