"""Markers that fence untrusted text in prompts, the same on every delivery of the same work.

Prompts place candidate texts, instructions and queries between markers the text's author
cannot know, and remove the marker from the text. A marker is an HMAC of the work's ids (step,
item, version, order, attempt) under a random secret of the job's own, so:

- a redelivered message (a crash, a drain, a retry) renders the very same prompt, and the shared
  request cache answers it instead of the model paying again;
- different items, steps and jobs get unrelated markers, and knowing the ids (or another
  marker, say one a model echoed) tells nothing about a marker.

The secret is made the first time any process needs it and kept in the job store under a key
the gateway never reads or returns; every replica, and a restarted one, reads the same secret.
Work done for no job (a direct gRPC call) gets a fresh random marker, and is not cached.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from nats.js.errors import KeyWrongLastSequenceError

from taxoforge.bus.connection import Bus

__all__ = ["MARKER_SECRET", "Fence", "JobSecrets", "derive_marker", "fence", "fence_for"]

_REMOVED = "[marker removed]"
_SECRET_BYTES = 32
_CACHED_SECRETS = 4096

# The current job's marker secret (loaded on first use); None when the work is for no job.
MARKER_SECRET: ContextVar[Callable[[], Awaitable[bytes]] | None] = ContextVar(
    "MARKER_SECRET", default=None
)


@dataclass(frozen=True)
class Fence:
    """One prompt's marker, and whether it is the same on every delivery (so the request is
    worth caching)."""

    marker: str
    stable: bool

    def clean(self, text: str) -> str:
        """``text`` made safe to place between this fence's markers."""
        return fence(text, self.marker)


def fence(text: str, marker: str) -> str:
    """Untrusted ``text`` made safe to place between markers carrying ``marker``: every copy
    of the marker in it is removed (what is left holds none, however the copies overlap)."""
    return text.replace(marker, _REMOVED)


def derive_marker(secret: bytes, *ids: str | int) -> str:
    """The marker of the work named by ``ids`` under a job's ``secret`` (12 hex digits, like
    the random ones, so prompts keep their length)."""
    message = json.dumps([str(i) for i in ids], ensure_ascii=False).encode()
    return hmac.digest(secret, message, "sha256").hex()[:12]  # hmac.new's, in one C call


async def fence_for(*ids: str | int) -> Fence:
    """The fence of one prompt: derived from the ids under the current job's secret, or
    random when there is no job."""
    load = MARKER_SECRET.get()
    if load is None:
        return Fence(secrets.token_hex(6), stable=False)
    return Fence(derive_marker(await load(), *ids), stable=True)


class JobSecrets:
    """Each job's marker secret: created once by whichever process needs it first, then read
    (and remembered) by every process."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._known: dict[str, bytes] = {}

    def bind(self, job_id: str) -> None:
        """Fence the current task's prompts with the job's markers."""

        async def _load() -> bytes:
            return await self.secret(job_id)

        MARKER_SECRET.set(_load)

    async def secret(self, job_id: str) -> bytes:
        """The job's secret (made now if no process has made it yet)."""
        known = self._known.get(job_id)
        if known is not None:
            return known
        kv = await self._bus.jobs_kv()
        key = f"secret.{job_id}"
        made = secrets.token_bytes(_SECRET_BYTES)
        try:
            await kv.create(key, made)
            secret = made
        except KeyWrongLastSequenceError:  # another process (or task) made it first
            entry = await kv.get(key)
            secret = bytes(entry.value or b"")
            if len(secret) != _SECRET_BYTES:
                raise RuntimeError(f"job {job_id}: its marker secret is damaged") from None
        if len(self._known) >= _CACHED_SECRETS:
            self._known.pop(next(iter(self._known)))
        self._known[job_id] = secret
        return secret
