"""Which tenant owns each taxonomy.

Jobs carry their tenant on the record, and uploads and benchmarks live under a tenant's own
names; a taxonomy is the one thing the taxonomy service keeps by a global id, so the gateway
records its owner beside the jobs (``owner.taxonomy.<id>``). A taxonomy without an owner is
shared: built in or loaded from the service's folders, read by every tenant, changed by none.
"""

from __future__ import annotations

import contextlib

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from taxoforge.bus import Bus
from taxoforge.bus.topology import KV_JOBS
from taxoforge.store import scan

__all__ = ["Ownership"]


def _key(taxonomy_id: str) -> str:
    return f"owner.taxonomy.{taxonomy_id}"


class Ownership:
    """Taxonomy owners in the jobs bucket."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def owner(self, taxonomy_id: str) -> str | None:
        """The owning tenant's name, or None for a shared (or unknown) taxonomy."""
        kv = await self._bus.jobs_kv()
        try:
            entry = await kv.get(_key(taxonomy_id))
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def claim(self, taxonomy_id: str, tenant: str) -> bool:
        """Make ``tenant`` the owner unless another tenant is; True when ``tenant`` owns it."""
        kv = await self._bus.jobs_kv()
        with contextlib.suppress(KeyWrongLastSequenceError):
            await kv.create(_key(taxonomy_id), tenant.encode())
            return True
        return await self.owner(taxonomy_id) == tenant

    async def release(self, taxonomy_id: str) -> None:
        """Forget a claim whose taxonomy was never made."""
        kv = await self._bus.jobs_kv()
        with contextlib.suppress(KeyNotFoundError):
            await kv.purge(_key(taxonomy_id))

    async def owners(self) -> dict[str, str]:
        """Every owned taxonomy id and its tenant."""
        prefix = _key("")
        claims = scan(self._bus, KV_JOBS, prefix + "*")
        return {key.removeprefix(prefix): v.decode() async for key, v in claims}
