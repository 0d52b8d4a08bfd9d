"""A job's selection settings with every default filled in, and where imports may read from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.selector.imports import ImportLimits
from taxoforge.errors import PermanentError
from taxoforge.jobs.model import JobKind, job_kind
from taxoforge.selection import EXPORT_FORMATS, SELECTION_METHODS
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "SelectionDefaults",
    "selection_spec",
]


def selection_spec(job: pb.Job) -> pb.SelectionSpec:
    """The job's SelectionSpec, defaults resolved for its kind.

    Generated data is already judged and planned over taxonomy nodes, so by default it is
    clustered by node and ranked by its judge scores (no further model calls); imported data
    is tagged, clustered on its tags and scored comparatively (TACOS as published).
    """
    recipe = job.recipe
    spec = pb.SelectionSpec()
    spec.CopyFrom(recipe.selection)
    generated = job_kind(job) is not JobKind.SELECT
    spec.method = spec.method or "tacos"
    if not spec.budget and generated:
        spec.budget = recipe.budget
    spec.budget_unit = spec.budget_unit or "records"
    spec.quota = spec.quota or "proportional"
    spec.cluster_by = spec.cluster_by or ("node" if generated else "tags")
    spec.scoring = spec.scoring or ("judge" if generated else "comparative")
    spec.min_tag_frequency = spec.min_tag_frequency or 2
    spec.tag_merge_threshold = spec.tag_merge_threshold or 0.85
    spec.ngram = spec.ngram or 10
    spec.diversity_threshold = spec.diversity_threshold or 0.9
    spec.score_threshold = spec.score_threshold or 90.0
    if not spec.compare:
        # Without a budget DEITA would embed every candidate only to drop near-twins: it is
        # measured when asked for.
        spec.compare.extend(
            m for m in SELECTION_METHODS if m != spec.method and (spec.budget or m != "deita")
        )
    if not spec.exports:
        spec.exports.extend(EXPORT_FORMATS)
    spec.seed = spec.seed or recipe.seed
    spec.license = spec.license or "other"
    spec.dedup = spec.dedup or "record"
    return spec


@dataclass(frozen=True)
class SelectionDefaults:
    """Where a selection job may read its file from (service settings)."""

    # Directories a path import may be under; none: path imports are refused.
    import_roots: tuple[str, ...] = ()
    import_urls: bool = True
    import_max_bytes: int = 20 << 30
    # URLs whose host is loopback, private or link-local (a cluster's own services, cloud
    # metadata endpoints) are refused unless this is set: a URL import must not reach inside.
    import_private_urls: bool = False
    # How much one import may hold or unpack: a row over the record limit is dropped.
    import_limits: ImportLimits = field(default_factory=ImportLimits)
    # Rows screened before the checks that need no order move to a worker process.
    screen_worker_after_rows: int = 8192

    def allowed_path(self, path: str) -> Path:
        """``path`` resolved, if it is a file under one of the import roots.

        Raises:
            PermanentError: path imports are off, the path is outside the roots, or no file.
        """
        if not self.import_roots:
            raise PermanentError(
                "imports by path are turned off; set TAXOFORGE_IMPORT_ROOTS on the selector "
                "to the directories it may read, or upload the file"
            )
        resolved = Path(path).resolve()
        roots = [Path(r).resolve() for r in self.import_roots]
        if not any(resolved.is_relative_to(root) for root in roots):
            raise PermanentError(
                f"{path} is outside the import roots ({', '.join(map(str, roots))})"
            )
        if not resolved.is_file():
            raise PermanentError(f"{path} is not a file the selector can read")
        return resolved
