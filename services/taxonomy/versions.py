"""Taxonomies as versioned data in JetStream: an index per taxonomy in KV (CAS-updated), each
version's tree in the Object Store (trees with syllabi outgrow a KV value). Versions are never
changed once written, so a job that recorded version 3 plans on exactly that tree forever.

A taxonomy read from a file (the built-in ones, and those in TAXOFORGE_TAXONOMY_DIR) is shared
by every tenant and read-only: only a new file changes it. Every other way to add a version
(edit, review, expansion, import) is refused here, so no route around the gateway's checks
can change one in place."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, ObjectNotFoundError
from nats.js.errors import NotFoundError as JSNotFoundError

from services.taxonomy.document import parse_taxonomy
from services.taxonomy.tree import counts, digest
from taxoforge.bus import Bus
from taxoforge.bus.topology import KV_TAXONOMIES, OBJ_TAXONOMIES
from taxoforge.errors import ConflictError, NotFoundError
from taxoforge.jobs.model import now_ms
from taxoforge.store import scan
from taxoforge.v1 import common_pb2 as pb

__all__ = ["TaxonomyStore", "is_builtin"]

log = structlog.get_logger(__name__)

_CACHE = 32


def is_builtin(idx: pb.TaxonomyIndex) -> bool:
    """Whether a taxonomy was read from a file: shared by every tenant, and read-only."""
    return any(info.source_digest for info in idx.versions)


def _read_only(taxonomy_id: str) -> ConflictError:
    return ConflictError(
        f"taxonomy {taxonomy_id!r} is built in, shared and read-only; to change it, make a copy "
        f"of your own: export it (GET /v1/taxonomies/{taxonomy_id}/export), give the document "
        "a new id and import it (POST /v1/taxonomies), then edit, expand or review the copy"
    )


class TaxonomyStore:
    """Read, list and append taxonomy versions; safe with many replicas at once."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._cache: OrderedDict[tuple[str, str], pb.Taxonomy] = OrderedDict()

    async def index(self, taxonomy_id: str) -> pb.TaxonomyIndex | None:
        """A taxonomy's history, or None."""
        idx, _ = await self._index(taxonomy_id)
        return idx

    async def _index(self, taxonomy_id: str) -> tuple[pb.TaxonomyIndex | None, int]:
        kv = await self._bus.kv(KV_TAXONOMIES)
        try:
            entry = await kv.get(f"tax.{taxonomy_id}")
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, 0
        return pb.TaxonomyIndex.FromString(entry.value), int(entry.revision or 0)

    async def ensure_writable(self, taxonomy_id: str) -> None:
        """Raise ConflictError, saying how to make a copy, if the taxonomy is built in."""
        idx = await self.index(taxonomy_id)
        if idx is not None and is_builtin(idx):
            raise _read_only(taxonomy_id)

    async def all(self) -> list[pb.TaxonomyIndex]:
        """Every taxonomy's index, by id."""
        indexes = scan(self._bus, KV_TAXONOMIES, "tax.*")
        found = [pb.TaxonomyIndex.FromString(value) async for _, value in indexes]
        return sorted(found, key=lambda i: i.id)

    async def get(self, taxonomy_id: str, version: str = "") -> pb.Taxonomy:
        """A version (the latest when ``version`` is empty).

        Raises:
            NotFoundError: no such taxonomy or version, with what exists.
        """
        idx = await self.index(taxonomy_id)
        if idx is None or not idx.versions:
            known = ", ".join(i.id for i in await self.all()) or "none"
            raise NotFoundError(f"taxonomy {taxonomy_id!r} does not exist; known: {known}")
        info = idx.versions[-1] if not version else _version(idx, version)
        key = (taxonomy_id, info.version)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        store = await self._bus.objects(OBJ_TAXONOMIES)
        try:
            blob = await store.get(_object_name(taxonomy_id, info))
        except (ObjectNotFoundError, JSNotFoundError) as exc:
            raise NotFoundError(
                f"taxonomy {taxonomy_id!r} version {info.version} has no stored tree"
            ) from exc
        taxonomy = pb.Taxonomy.FromString(blob.data or b"")
        self._cache[key] = taxonomy
        if len(self._cache) > _CACHE:
            self._cache.popitem(last=False)
        return taxonomy

    async def add_version(
        self,
        taxonomy: pb.Taxonomy,
        change: str,
        base_version: str | None = None,
        source_digest: str = "",
        once_per_change: bool = False,
    ) -> pb.Taxonomy:
        """Append ``taxonomy`` (its root, title, description) as the next version.

        Args:
            base_version: refuse (ConflictError) unless this is still the latest version;
                None skips the check.
            source_digest: the digest of the file it was read from; a file already imported
                is not imported again (the version that has it is returned). Only a version
                from a file may follow one from a file (ConflictError otherwise).
            once_per_change: if a version with this ``change`` exists, return it instead
                (a redelivered expansion applies once).
        """
        tree = pb.Taxonomy()
        tree.CopyFrom(taxonomy)
        tree.digest = digest(tree.root)
        nodes, leaves, proposed = counts(tree.root)
        kv = await self._bus.kv(KV_TAXONOMIES)
        for _ in range(50):
            idx, revision = await self._index(tree.id)
            if idx is None:
                idx = pb.TaxonomyIndex(id=tree.id, title=tree.title)
            latest = idx.versions[-1].version if idx.versions else ""
            for info in idx.versions:
                if (source_digest and info.source_digest == source_digest) or (
                    once_per_change and info.change == change
                ):
                    return await self.get(tree.id, info.version)
            if not source_digest and is_builtin(idx):
                raise _read_only(tree.id)
            if base_version is not None and base_version != latest:
                raise ConflictError(
                    f"taxonomy {tree.id!r} is at version {latest or 'none'}, not {base_version}; "
                    "read it again and redo the change"
                )
            tree.version = str(len(idx.versions) + 1)
            tree.parent_version = latest
            tree.created_at_ms = now_ms()
            tree.change = change
            info = pb.TaxonomyVersionInfo(
                version=tree.version,
                created_at_ms=tree.created_at_ms,
                parent_version=latest,
                change=change,
                digest=tree.digest,
                nodes=nodes,
                leaves=leaves,
                proposed=proposed,
                source_digest=source_digest,
            )
            # The tree first, under a name no other version can take; then claim the number.
            store = await self._bus.objects(OBJ_TAXONOMIES)
            await store.put(_object_name(tree.id, info), tree.SerializeToString())
            idx.title = tree.title
            idx.versions.append(info)
            try:
                if revision:
                    await kv.update(f"tax.{tree.id}", idx.SerializeToString(), last=revision)
                else:
                    await kv.create(f"tax.{tree.id}", idx.SerializeToString())
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
                continue
            log.info(
                "taxonomy_version_added", taxonomy=tree.id, version=tree.version, change=change
            )
            return tree
        raise ConflictError(f"taxonomy {tree.id!r}: too many concurrent changes; try again")

    async def import_files(self, folders: list[Path]) -> list[pb.Taxonomy]:
        """Import each ``*.yaml`` taxonomy file not imported before (built-ins on start-up)."""
        imported = []
        for folder in folders:
            for path in sorted(folder.glob("*.y*ml")):
                text = path.read_text(encoding="utf-8")
                taxonomy = parse_taxonomy(text, source=path.name)
                source = hashlib.sha256(text.encode()).hexdigest()
                imported.append(
                    await self.add_version(taxonomy, taxonomy.change, source_digest=source)
                )
        return imported

    async def update(
        self,
        taxonomy_id: str,
        base_version: str,
        change: str,
        edit: Callable[[pb.Taxonomy], Awaitable[pb.TaxonomyNode] | pb.TaxonomyNode],
    ) -> pb.Taxonomy:
        """A new version from ``edit`` applied to ``base_version`` (default: the latest)."""
        current = await self.get(taxonomy_id)
        if base_version and base_version != current.version:
            raise ConflictError(
                f"taxonomy {taxonomy_id!r} is at version {current.version}, not {base_version}; "
                "read it again and redo the change"
            )
        result = edit(current)
        root = await result if isinstance(result, Awaitable) else result
        new = pb.Taxonomy(id=current.id, title=root.title, description=root.description, root=root)
        return await self.add_version(new, change, base_version=current.version)


def _version(idx: pb.TaxonomyIndex, version: str) -> pb.TaxonomyVersionInfo:
    for info in idx.versions:
        if info.version == version:
            return info
    raise NotFoundError(
        f"taxonomy {idx.id!r} has no version {version!r}; versions 1 to {len(idx.versions)}"
    )


def _object_name(taxonomy_id: str, info: pb.TaxonomyVersionInfo) -> str:
    return f"{taxonomy_id}/v{info.version}-{info.digest[:16]}.pb"
