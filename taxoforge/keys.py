"""API keys and the tenants file that lists them: ``taxoforge keys new`` writes an entry, the
gateway reads the file (``gateway/tenants.py``). Both check an entry with the same model.

The tenants file is YAML, written by hand or with ``taxoforge keys new``::

    tenants:
      - name: acme
        keys: ["sha256:9f86d0..."]          # hashes only; the keys themselves are never stored
        rate_limit: {requests_per_s: 10, burst: 40}
        job_limit: {tokens: 5000000, cost_usd: 50}

Keys are 256-bit random tokens, so a plain SHA-256 is the right hash: it cannot be reversed
or brute-forced, and a lookup is one dictionary access (a slow password hash such as argon2
exists for guessable passwords, and would cost every request tens of milliseconds).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["KEY_PREFIX", "JobLimit", "RateLimit", "TenantEntry", "hash_key", "new_key"]

KEY_PREFIX = "tfk_"
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def new_key() -> str:
    """A new API key: the prefix (so scanners and log filters recognise it) and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What the tenants file stores for ``key``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Model):
    """Requests a tenant may make: ``burst`` at once, refilled at ``requests_per_s``."""

    requests_per_s: float = Field(default=10.0, gt=0)
    burst: int = Field(default=40, ge=1)


class JobLimit(_Model):
    """What one job may spend before it stops; 0 is no limit."""

    tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)


class TenantEntry(_Model):
    """One entry of the tenants file: a name, its key hashes and its limits."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    keys: list[str] = Field(min_length=1)
    rate_limit: RateLimit = RateLimit()
    job_limit: JobLimit = JobLimit()

    @model_validator(mode="after")
    def _hashed(self) -> Self:
        for key in self.keys:
            if not _HASH.match(key):
                shown = key[:12] + "..." if len(key) > 12 else key
                raise ValueError(
                    f"tenant {self.name!r}: {shown!r} is not a key hash (sha256:<64 hex>); "
                    "store hashes, never keys (`taxoforge keys new` prints both)"
                )
        return self
