"""Generator service settings."""

from __future__ import annotations

from pydantic import Field

from taxoforge.settings import ServiceSettings

__all__ = ["GeneratorSettings"]


class GeneratorSettings(ServiceSettings):
    """Adds generation limits."""

    # Tries to get a usable (non-empty) instruction before the item fails.
    instruction_attempts: int = Field(default=4, ge=1)
