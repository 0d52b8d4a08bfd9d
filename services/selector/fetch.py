"""An import's file fetched by URL: public hosts only unless allowed (``taxoforge.netguard``
checks every address, redirects included), within a size limit; and the local file's name."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from taxoforge.errors import PermanentError
from taxoforge.netguard import PublicResolver, get_following_redirects

__all__ = ["fetch_url", "local_name"]

_PRIVATE_HINT = (
    "URL imports reach public hosts only (TAXOFORGE_IMPORT_PRIVATE_URLS=true allows others)"
)


async def fetch_url(url: str, dest: Path, limit: int, private_ok: bool) -> None:
    """Save ``url`` to ``dest``: at most ``limit`` bytes, from a public host unless
    ``private_ok``. Raises ``PermanentError`` for anything that cannot be read."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    guard = not private_ok
    resolver = PublicResolver(_PRIVATE_HINT) if guard else None
    connector = aiohttp.TCPConnector(resolver=resolver)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            resp = await get_following_redirects(session, url, guard, hint=_PRIVATE_HINT)
            async with resp:
                await _save(resp, url, dest, limit)
    except aiohttp.ClientError as exc:
        raise PermanentError(f"could not read {url}: {exc}") from exc


async def _save(resp: aiohttp.ClientResponse, url: str, dest: Path, limit: int) -> None:
    if resp.status >= 400:
        raise PermanentError(f"GET {url} answered {resp.status} {resp.reason}")
    size = 0
    with dest.open("wb") as fh:
        async for chunk in resp.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > limit:
                raise PermanentError(f"{url} is larger than TAXOFORGE_IMPORT_MAX_BYTES ({limit})")
            fh.write(chunk)


def local_name(name: str) -> str:
    """A file name for the import's local copy: the last part of ``name``, safe characters."""
    last = name.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", last)[-100:]
    return base.lstrip(".") or "source"
