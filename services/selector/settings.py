"""Selector service settings."""

from __future__ import annotations

from pydantic import Field

from services.selector.imports import MAX_RECORD_BYTES_CEILING, ImportLimits
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
    # What one import may hold or unpack (services.selector.imports.ImportLimits): a row over
    # the record limit is dropped as too_large (it becomes queue messages, and a compare task
    # carries two rows within NATS's 1 MiB max payload); a file unpacking past its compressed
    # size times the ratio, or past the decompressed limit, is refused; so is a Parquet page
    # unpacking past the page limit, since a page is read whole.
    import_max_record_bytes: int = Field(default=256 << 10, gt=0, le=MAX_RECORD_BYTES_CEILING)
    import_max_decompressed_bytes: int = Field(default=20 << 30, gt=0)
    import_max_compression_ratio: float = Field(default=100.0, ge=1)
    import_max_page_bytes: int = Field(default=32 << 20, gt=0)
    # Retries a TACOS comparison may send beyond its two orders, within the comparison budget
    # (TAXOFORGE_COMPARISON_SPARE_CALLS): a budget of B calls plans B // (2 + this)
    # comparisons. 1: one invalid reply per comparison can be asked again, at a third fewer
    # comparisons than none would allow.
    comparison_spare_calls: int = Field(default=1, ge=0, le=8)
    # Rows the prepare step screens on its own thread before it moves the contamination
    # check and token counts to a worker process beside it (TAXOFORGE_SCREEN_WORKER_AFTER_ROWS):
    # a small job is done before a process would have started; 0: always.
    screen_worker_after_rows: int = Field(default=8192, ge=0)

    def selection_defaults(self) -> SelectionDefaults:
        """What the prepare step needs of these settings."""
        roots = tuple(r.strip() for r in self.import_roots.split(",") if r.strip())
        return SelectionDefaults(
            roots,
            self.import_urls,
            self.import_max_bytes,
            self.import_private_urls,
            screen_worker_after_rows=self.screen_worker_after_rows,
            import_limits=ImportLimits(
                max_record_bytes=self.import_max_record_bytes,
                max_decompressed_bytes=self.import_max_decompressed_bytes,
                max_compression_ratio=self.import_max_compression_ratio,
                max_page_bytes=self.import_max_page_bytes,
            ),
        )
