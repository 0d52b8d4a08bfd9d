"""Selector service settings."""

from __future__ import annotations

from pydantic import Field

from services.selector.spec import SelectionDefaults
from taxoforge.settings import ServiceSettings

__all__ = ["SelectorSettings"]


class SelectorSettings(ServiceSettings):
    """Adds how often jobs are checked, the judge's address, and where imports may read."""

    tracker_period_s: float = Field(default=1.0, gt=0)
    # The judge service, for judging a job's golden set at the end (TAXOFORGE_JUDGE_ADDR).
    judge_addr: str = "127.0.0.1:50053"
    # Directories a selection job may import a path from, comma-separated
    # (TAXOFORGE_IMPORT_ROOTS); empty: path imports are refused (upload the file instead).
    import_roots: str = ""
    # Imports by http(s) URL (TAXOFORGE_IMPORT_URLS), and the largest file an import may be.
    import_urls: bool = True
    import_max_bytes: int = Field(default=20 << 30, gt=0)
    # URL imports from private addresses (TAXOFORGE_IMPORT_PRIVATE_URLS): off on a cluster.
    import_private_urls: bool = False

    def selection_defaults(self) -> SelectionDefaults:
        """What the prepare step needs of these settings."""
        roots = tuple(r.strip() for r in self.import_roots.split(",") if r.strip())
        return SelectionDefaults(
            roots, self.import_urls, self.import_max_bytes, self.import_private_urls
        )
