"""Tenants: who may call the gateway (API keys, stored hashed), how often (a token bucket per
tenant) and how much a job of theirs may spend.

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "KEY_PREFIX",
    "LOCAL",
    "JobLimit",
    "RateLimit",
    "RateLimiter",
    "Tenant",
    "TenantRegistry",
    "TenantsFileError",
    "hash_key",
    "new_key",
]

log = structlog.get_logger(__name__)

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


class Tenant(_Model):
    """One customer of the gateway: its jobs, taxonomies, uploads and benchmarks are its own."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    keys: list[str] = Field(min_length=1)
    rate_limit: RateLimit = RateLimit()
    job_limit: JobLimit = JobLimit()

    @model_validator(mode="after")
    def _hashed(self) -> Tenant:
        for key in self.keys:
            if not _HASH.match(key):
                shown = key[:12] + "..." if len(key) > 12 else key
                raise ValueError(
                    f"tenant {self.name!r}: {shown!r} is not a key hash (sha256:<64 hex>); "
                    "store hashes, never keys (`taxoforge keys new` prints both)"
                )
        return self

    def object(self, name: str) -> str:
        """Where this tenant's object ``name`` lives in the shared object store."""
        return f"tenants/{self.name}/{name}" if self.name else name

    def benchmark(self, name: str) -> str:
        """The registry name of this tenant's benchmark ``name``."""
        return f"{self.name}~{name}" if self.name else name


# The one tenant of a gateway without keys (auth: none): it owns everything, as before tenants.
LOCAL = Tenant.model_construct(name="", keys=[], rate_limit=RateLimit(), job_limit=JobLimit())


class _Document(_Model):
    tenants: list[Tenant]

    @model_validator(mode="after")
    def _unique(self) -> _Document:
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError("tenant names must be unique")
        keys = [k for t in self.tenants for k in t.keys]
        if len(set(keys)) != len(keys):
            raise ValueError("a key hash is listed under two tenants")
        return self


class TenantsFileError(ValueError):
    """The tenants file is missing or invalid."""


def _load(path: Path) -> dict[str, Tenant]:
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TenantsFileError(f"cannot read the tenants file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TenantsFileError(f"the tenants file {path} is not valid YAML: {exc}") from exc
    try:
        document = _Document.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise TenantsFileError(f"the tenants file {path} is invalid: {problems}") from exc
    return {key: tenant for tenant in document.tenants for key in tenant.keys}


class TenantRegistry:
    """The tenants file, read at start and again whenever it changes (a rotated Secret)."""

    def __init__(self, path: Path, check_every_s: float = 5.0) -> None:
        self._path = path
        self._check_every = check_every_s
        self._by_hash = _load(path)  # a bad file at start is fatal: better than no tenants
        self._stamp = self._mtime()
        self._checked = time.monotonic()
        log.info("tenants_loaded", tenants=len({t.name for t in self._by_hash.values()}))

    def _mtime(self) -> float:
        try:
            return self._path.stat().st_mtime
        except OSError:
            return 0.0

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._check_every:
            return
        self._checked = now
        stamp = self._mtime()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._by_hash = _load(self._path)
        except TenantsFileError as exc:  # keep serving the tenants we had
            log.error("tenants_reload_failed", error=str(exc))
            return
        log.info("tenants_reloaded", tenants=len({t.name for t in self._by_hash.values()}))

    def authenticate(self, key: str) -> Tenant | None:
        """The tenant ``key`` belongs to, or None."""
        self._maybe_reload()
        return self._by_hash.get(hash_key(key))


@dataclass
class RateLimiter:
    """A token bucket per tenant, in this gateway process (N replicas allow N times as much)."""

    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def wait_s(self, tenant: Tenant) -> float:
        """0 when the tenant may make this request now (and it is counted), else how long to
        wait before the next one would be allowed."""
        limit = tenant.rate_limit
        now = time.monotonic()
        tokens, last = self._buckets.get(tenant.name, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - last) * limit.requests_per_s)
        if tokens >= 1.0:
            self._buckets[tenant.name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[tenant.name] = (tokens, now)
        return (1.0 - tokens) / limit.requests_per_s
