"""Taxonomy documents: YAML (or JSON) in, a validated tree out, and back to YAML.

A document names its taxonomy (``id``, ``version``, ``title``, ``description``) and lists its top
``nodes``. Every node has a slug ``id`` unique in the document and a ``title``; optionally
``description``, ``kind``, ``weight`` (> 0, default 1), ``attributes`` (a mapping of names to a
text or a list of texts), ``status`` (``proposed`` for nodes awaiting review) and ``children``.
Errors name the line, the node and the problem.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from services.taxonomy.tree import digest
from taxoforge.errors import PermanentError
from taxoforge.text import InvalidText, storable
from taxoforge.v1 import common_pb2 as pb

__all__ = ["TaxonomyFileError", "dump_taxonomy", "parse_taxonomy"]

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_TOP_KEYS = {"id", "version", "title", "description", "nodes"}
_NODE_KEYS = {"id", "title", "description", "kind", "weight", "attributes", "status", "children"}
_STATUS = {"accepted": pb.NODE_STATUS_ACCEPTED, "proposed": pb.NODE_STATUS_PROPOSED}
_NULL = "tag:yaml.org,2002:null"


class TaxonomyFileError(PermanentError):
    """A taxonomy document that cannot be used, with where and why."""


class _Reader:
    """Walks a composed YAML tree, so every error can say on which line it is."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.seen: dict[str, int] = {}

    def fail(self, node: yaml.Node, where: str, problem: str) -> TaxonomyFileError:
        line = node.start_mark.line + 1
        return TaxonomyFileError(f"{self.source}:{line}: {where}: {problem}")

    def mapping(self, node: yaml.Node, where: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, "expected a mapping (key: value lines)")
        out: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.fail(key, where, "keys must be plain words")
            name = self.storable(key, where, str(key.value))
            if name in out:
                raise self.fail(key, where, f"key {name!r} appears twice")
            out[name] = value
        return out

    def storable(self, node: yaml.Node, where: str, text: str) -> str:
        # YAML's "\ud800" escape makes a text that no stored (UTF-8) field can carry.
        try:
            return storable(text)
        except InvalidText as exc:
            raise self.fail(node, where, str(exc)) from exc

    def text(self, node: yaml.Node, where: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, where, "expected a text")
        if node.tag == _NULL:
            return ""  # `title: null`, `title: ~` and `title:` are all missing
        return self.storable(node, where, str(node.value)).strip()

    def number(self, node: yaml.Node, where: str, name: str) -> float:
        try:
            value = float(self.text(node, where))
        except ValueError as exc:
            raise self.fail(node, where, f"{name} must be a number") from exc
        return value

    def node(self, raw: yaml.Node, where: str) -> pb.TaxonomyNode:
        fields = self.mapping(raw, where)
        node_id = self.text(fields["id"], where) if "id" in fields else ""
        where = f"{where} ({node_id or 'no id'})"
        unknown = set(fields) - _NODE_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise self.fail(
                fields[key], where, f"unknown key {key!r}; allowed: {', '.join(sorted(_NODE_KEYS))}"
            )
        if not SLUG.match(node_id):
            raise self.fail(raw, where, "id must be a lowercase slug (letters, digits, '-')")
        if node_id in self.seen:
            raise self.fail(
                raw, where, f"id {node_id!r} is already used on line {self.seen[node_id]}"
            )
        self.seen[node_id] = raw.start_mark.line + 1
        title = self.text(fields["title"], where) if "title" in fields else ""
        if not title:
            raise self.fail(raw, where, "title is missing")
        weight = self.number(fields["weight"], where, "weight") if "weight" in fields else 1.0
        if not (weight > 0 and math.isfinite(weight)):
            raise self.fail(
                fields["weight"], where, "weight must be > 0 (prune the node instead of zeroing it)"
            )
        status = pb.NODE_STATUS_ACCEPTED
        if "status" in fields:
            word = self.text(fields["status"], where)
            if word not in _STATUS:
                raise self.fail(fields["status"], where, "status must be accepted or proposed")
            status = _STATUS[word]
        node = pb.TaxonomyNode(
            id=node_id,
            title=title,
            description=self.text(fields["description"], where) if "description" in fields else "",
            kind=self.text(fields["kind"], where) if "kind" in fields else "",
            weight=weight,
            status=status,
            origin="file",
        )
        if "attributes" in fields:
            for name, value in self.mapping(fields["attributes"], f"{where} attributes").items():
                node.attributes[name].CopyFrom(self.attribute(value, f"{where} attribute {name}"))
        if "children" in fields and fields["children"].tag != _NULL:
            children = fields["children"]
            if not isinstance(children, yaml.SequenceNode):
                raise self.fail(children, where, "children must be a list")
            for i, child in enumerate(children.value):
                node.children.append(self.node(child, f"{where} > children[{i}]"))
        return node

    def attribute(self, node: yaml.Node, where: str) -> pb.AttributeValue:
        if isinstance(node, yaml.ScalarNode):
            return pb.AttributeValue(text=self.storable(node, where, str(node.value)))
        if isinstance(node, yaml.SequenceNode):
            return pb.AttributeValue(items=[self.text(item, where) for item in node.value])
        raise self.fail(node, where, "an attribute is a text or a list of texts")


def parse_taxonomy(text: str, source: str = "<taxonomy>") -> pb.Taxonomy:
    """Parse and validate a taxonomy document.

    Raises:
        TaxonomyFileError: naming the line, the node and the problem.
    """
    try:
        composed = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaxonomyFileError(f"{source}:{line} not valid YAML: {problem}") from exc
    if composed is None:
        raise TaxonomyFileError(f"{source}: the document is empty")
    reader = _Reader(source)
    top = reader.mapping(composed, "document")
    unknown = set(top) - _TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise reader.fail(
            top[key], "document", f"unknown key {key!r}; allowed: {sorted(_TOP_KEYS)}"
        )
    tax_id = reader.text(top["id"], "id") if "id" in top else ""
    if not SLUG.match(tax_id):
        raise reader.fail(
            composed, "id", f"{tax_id!r} must be a lowercase slug (letters, digits, '-')"
        )
    nodes = top.get("nodes")
    if not isinstance(nodes, yaml.SequenceNode) or not nodes.value:
        raise reader.fail(nodes or composed, "nodes", "must be a non-empty list of nodes")
    root = pb.TaxonomyNode(
        id=tax_id,
        title=reader.text(top["title"], "title") if "title" in top else tax_id,
        description=reader.text(top["description"], "description") if "description" in top else "",
        kind="root",
        weight=1.0,
        origin="file",
    )
    reader.seen[tax_id] = top["id"].start_mark.line + 1
    for i, raw in enumerate(nodes.value):
        root.children.append(reader.node(raw, f"nodes[{i}]"))
    taxonomy = pb.Taxonomy(id=tax_id, title=root.title, description=root.description, root=root)
    label = reader.text(top["version"], "version") if "version" in top else ""
    if label:
        taxonomy.change = f"imported from {source} (version {label})"
    else:
        taxonomy.change = f"imported from {source}"
    taxonomy.digest = digest(root)
    return taxonomy


def _node_dict(node: pb.TaxonomyNode) -> dict[str, Any]:
    out: dict[str, Any] = {"id": node.id, "title": node.title}
    if node.kind:
        out["kind"] = node.kind
    if node.description:
        out["description"] = node.description
    if node.weight != 1.0:
        out["weight"] = node.weight
    if node.status == pb.NODE_STATUS_PROPOSED:
        out["status"] = "proposed"
    if node.attributes:
        out["attributes"] = {
            name: (value.text if not value.items else list(value.items))
            for name, value in sorted(node.attributes.items())
        }
    if node.children:
        out["children"] = [_node_dict(child) for child in node.children]
    return out


def dump_taxonomy(taxonomy: pb.Taxonomy) -> str:
    """The taxonomy as a YAML document that ``parse_taxonomy`` reads back to the same tree."""
    doc: dict[str, Any] = {
        "id": taxonomy.id,
        "version": taxonomy.version or "1",
        "title": taxonomy.title,
    }
    if taxonomy.description:
        doc["description"] = taxonomy.description
    doc["nodes"] = [_node_dict(child) for child in taxonomy.root.children]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
