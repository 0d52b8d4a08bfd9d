"""Taxonomy service settings."""

from __future__ import annotations

from pathlib import Path

from taxoforge.settings import ServiceSettings

__all__ = ["BUILTIN_DIR", "TaxonomySettings"]

# The taxonomies shipped with taxoforge (see data/README.md).
BUILTIN_DIR = Path(__file__).parent / "data"


class TaxonomySettings(ServiceSettings):
    """Adds where to find taxonomy files beyond the built-in ones."""

    # A folder of *.yaml taxonomies imported beside the built-in ones (TAXOFORGE_TAXONOMY_DIR).
    taxonomy_dir: Path | None = None
