"""Taxonomy files: reading, validating, and serving them by id.

A file names its taxonomy (``id``, ``version``, ``title``, ``description``) and lists its top
``nodes``; every node has a slug ``id`` unique in the file, a ``title``, and optionally
``description``, ``kind``, ``weight`` (> 0, default 1) and ``children``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.v1 import common_pb2 as pb

__all__ = ["BUILTIN_DIR", "Catalog", "TaxonomyFileError", "iter_leaves", "parse_taxonomy"]

BUILTIN_DIR = Path(__file__).parent / "data"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_NODE_KEYS = {"id", "title", "description", "kind", "weight", "children"}


class TaxonomyFileError(PermanentError):
    """A taxonomy file that cannot be used, with where and why."""


def parse_taxonomy(text: str, source: str = "<taxonomy>") -> pb.Taxonomy:
    """Parse and validate a taxonomy document (YAML or JSON).

    Raises:
        TaxonomyFileError: naming the node path and the problem.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaxonomyFileError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TaxonomyFileError(f"{source}: expected a mapping with id, title and nodes")
    tax_id = str(data.get("id") or "")
    if not _SLUG.match(tax_id):
        raise TaxonomyFileError(
            f"{source}: id {tax_id!r} must be a lowercase slug (letters, digits, '-')"
        )
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise TaxonomyFileError(f"{source}: 'nodes' must be a non-empty list")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    root = pb.TaxonomyNode(
        id=tax_id,
        title=str(data.get("title") or tax_id),
        description=str(data.get("description") or ""),
        kind="root",
        weight=1.0,
    )
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        root.children.append(_parse_node(node, f"{source}: nodes[{i}]", seen))
    return pb.Taxonomy(
        id=tax_id,
        version=f"{data.get('version', '0')}+{digest}",
        title=root.title,
        description=root.description,
        root=root,
    )


def _parse_node(raw: Any, where: str, seen: set[str]) -> pb.TaxonomyNode:
    if not isinstance(raw, dict):
        raise TaxonomyFileError(f"{where}: a node must be a mapping with id and title")
    node_id = str(raw.get("id") or "")
    where = f"{where} ({node_id or 'no id'})"
    unknown = set(raw) - _NODE_KEYS
    if unknown:
        raise TaxonomyFileError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_NODE_KEYS)}"
        )
    if not _SLUG.match(node_id):
        raise TaxonomyFileError(f"{where}: id must be a lowercase slug (letters, digits, '-')")
    if node_id in seen:
        raise TaxonomyFileError(f"{where}: id {node_id!r} is used twice; ids must be unique")
    seen.add(node_id)
    title = str(raw.get("title") or "").strip()
    if not title:
        raise TaxonomyFileError(f"{where}: title is missing")
    try:
        weight = float(raw.get("weight", 1.0))
    except (TypeError, ValueError) as exc:
        raise TaxonomyFileError(f"{where}: weight must be a number") from exc
    if not (weight > 0 and math.isfinite(weight)):
        raise TaxonomyFileError(
            f"{where}: weight must be > 0 (prune the node instead of zeroing it)"
        )
    node = pb.TaxonomyNode(
        id=node_id,
        title=title,
        description=str(raw.get("description") or "").strip(),
        kind=str(raw.get("kind") or ""),
        weight=weight,
    )
    children = raw.get("children") or []
    if not isinstance(children, list):
        raise TaxonomyFileError(f"{where}: children must be a list")
    for i, child in enumerate(children):
        node.children.append(_parse_node(child, f"{where} > children[{i}]", seen))
    return node


def iter_leaves(
    node: pb.TaxonomyNode, path: tuple[str, ...] = ()
) -> Iterator[tuple[pb.TaxonomyNode, tuple[str, ...]]]:
    """Every leaf under ``node`` with the titles from the top level down to it."""
    for child in node.children:
        child_path = (*path, child.title)
        if child.children:
            yield from iter_leaves(child, child_path)
        else:
            yield child, child_path


class Catalog:
    """Taxonomies by id: the built-in ones, then those in an optional folder."""

    def __init__(self, extra_dir: Path | None = None) -> None:
        self._taxonomies: dict[str, pb.Taxonomy] = {}
        for folder in (BUILTIN_DIR, extra_dir):
            if folder is None:
                continue
            for path in sorted(folder.glob("*.y*ml")):
                taxonomy = parse_taxonomy(path.read_text(encoding="utf-8"), source=path.name)
                self._taxonomies[taxonomy.id] = taxonomy

    def get(self, taxonomy_id: str) -> pb.Taxonomy:
        """A taxonomy by id.

        Raises:
            NotFoundError: with the ids that exist.
        """
        taxonomy = self._taxonomies.get(taxonomy_id)
        if taxonomy is None:
            known = ", ".join(sorted(self._taxonomies)) or "none"
            raise NotFoundError(f"taxonomy {taxonomy_id!r} does not exist; known: {known}")
        return taxonomy

    def all(self) -> list[pb.Taxonomy]:
        """Every taxonomy, by id."""
        return [self._taxonomies[k] for k in sorted(self._taxonomies)]
