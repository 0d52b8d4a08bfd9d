"""Taxonomy service settings."""

from __future__ import annotations

from pathlib import Path

from taxoforge.settings import ServiceSettings

__all__ = ["TaxonomySettings"]


class TaxonomySettings(ServiceSettings):
    """Adds where to find taxonomy files beyond the built-in ones."""

    # A folder of *.yaml taxonomies served beside the built-in ones (TAXOFORGE_TAXONOMY_DIR).
    taxonomy_dir: Path | None = None
