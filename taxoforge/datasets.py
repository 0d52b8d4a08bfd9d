"""Datasets in the JetStream Object Store: written from files, read back as a stream of chunks."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from nats.js.errors import NotFoundError as JSNotFoundError
from nats.js.errors import ObjectNotFoundError

from taxoforge.bus.connection import Bus
from taxoforge.bus.topology import OBJ_DATASETS
from taxoforge.errors import NotFoundError
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "BENCHMARK_PREFIX",
    "DatasetStore",
    "benchmark_object",
    "read_object",
    "work_object",
    "write_object",
]

_CHUNK_TIMEOUT_S = 30.0


# Registered benchmarks (prompts selection decontaminates against) live under this prefix.
BENCHMARK_PREFIX = "benchmarks/"


def work_object(job_id: str, name: str) -> str:
    """The object name of one of a job's work files (not part of its dataset folder)."""
    return f"{job_id}/work/{name}"


def benchmark_object(name: str) -> str:
    """The object a registered benchmark's prompts are stored under."""
    return BENCHMARK_PREFIX + name


class DatasetStore:
    """Put and stream dataset files; memory use is one chunk, whatever the size."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def put_file(self, name: str, kind: str, path: Path, records: int) -> pb.DatasetInfo:
        """Upload a file as object ``name`` and describe it."""
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        store = await self._bus.datasets()
        with path.open("rb") as fh:
            info = await store.put(name, fh)
        return pb.DatasetInfo(
            kind=kind,
            object_name=name,
            records=records,
            bytes=int(info.size or 0),
            sha256=digest.hexdigest(),
        )

    async def exists(self, name: str) -> bool:
        """Whether object ``name`` is stored (and not deleted)."""
        store = await self._bus.datasets()
        try:
            info = await store.get_info(name)
        except (ObjectNotFoundError, JSNotFoundError):
            return False
        return not info.deleted

    async def stream(self, name: str) -> AsyncIterator[bytes]:
        """The object's bytes, chunk by chunk, in order.

        Raises:
            NotFoundError: no such object.
        """
        store = await self._bus.datasets()
        try:
            info = await store.get_info(name)
        except (ObjectNotFoundError, JSNotFoundError) as exc:
            raise NotFoundError(f"dataset {name!r} does not exist") from exc
        if not info.size or not info.chunks:
            return
        subject = f"$O.{OBJ_DATASETS}.C.{info.nuid}"
        sub = await self._bus.js.subscribe(subject, ordered_consumer=True)
        try:
            for _ in range(int(info.chunks)):
                msg = await sub.next_msg(timeout=_CHUNK_TIMEOUT_S)
                yield msg.data
        finally:
            await sub.unsubscribe()


async def write_object(bus: Bus, name: str, data: bytes) -> None:
    """Store a small object (an uploaded input) in the datasets store."""
    store = await bus.datasets()
    await store.put(name, data)


async def read_object(bus: Bus, name: str) -> bytes:
    """A small object's bytes, whole.

    Raises:
        NotFoundError: no such object.
    """
    store = await bus.datasets()
    try:
        result = await store.get(name)
    except (ObjectNotFoundError, JSNotFoundError) as exc:
        raise NotFoundError(f"object {name!r} does not exist") from exc
    return bytes(result.data or b"")
