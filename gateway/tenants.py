"""Tenants: who may call the gateway (API keys, stored hashed), how often (a token bucket per
tenant) and how much a job of theirs may spend.

The tenants file's format, and the keys and hashes in it, are ``taxoforge/keys.py``'s, shared
with ``taxoforge keys new``, which writes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from taxoforge.keys import JobLimit, RateLimit, TenantEntry, hash_key

__all__ = [
    "LOCAL",
    "RateLimiter",
    "Tenant",
    "TenantRegistry",
    "TenantsFileError",
]

log = structlog.get_logger(__name__)


class Tenant(TenantEntry):
    """One customer of the gateway: its jobs, taxonomies, uploads and benchmarks are its own."""

    def object(self, name: str) -> str:
        """Where this tenant's object ``name`` lives in the shared object store."""
        return f"tenants/{self.name}/{name}" if self.name else name

    def benchmark(self, name: str) -> str:
        """The registry name of this tenant's benchmark ``name``."""
        return f"{self.name}~{name}" if self.name else name


# The one tenant of a gateway without keys (auth: none): it owns everything, as before tenants.
LOCAL = Tenant.model_construct(name="", keys=[], rate_limit=RateLimit(), job_limit=JobLimit())


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
