"""Judge service settings."""

from __future__ import annotations

from taxoforge.settings import ServiceSettings

__all__ = ["JudgeSettings"]


class JudgeSettings(ServiceSettings):
    """The judge needs nothing beyond the shared settings yet; its knobs land here."""
