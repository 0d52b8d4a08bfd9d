"""Selector service settings."""

from __future__ import annotations

from pydantic import Field

from taxoforge.settings import ServiceSettings

__all__ = ["SelectorSettings"]


class SelectorSettings(ServiceSettings):
    """Adds how often running jobs are checked for completion."""

    tracker_period_s: float = Field(default=1.0, gt=0)
    # The judge service, for judging a job's golden set at the end (TAXOFORGE_JUDGE_ADDR).
    judge_addr: str = "127.0.0.1:50053"
