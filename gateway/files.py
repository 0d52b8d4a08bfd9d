"""Files through the gateway: uploads to select from, the benchmark registry, and a finished
job's files (datasets, dataset card, provenance), all streamed, never held whole."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.js.errors import NotFoundError as JSNotFoundError
from nats.js.errors import ObjectNotFoundError

from gateway.tenants import Tenant
from taxoforge.bus import Bus
from taxoforge.datasets import DatasetStore, benchmark_object
from taxoforge.errors import ConflictError, NotFoundError, PermanentError
from taxoforge.jobs.model import state_name
from taxoforge.jobs.store import JobStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["FILE_HEADERS", "MEDIA_TYPES", "BenchmarkCheck", "JobFiles", "media_type", "safe_name"]

# Reads a stored benchmark object as decontamination will: (prompts, why none) -- the selector's.
BenchmarkCheck = Callable[[str], Awaitable[tuple[int, str]]]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# A job file's media type by its format (its name's extension).
MEDIA_TYPES = {
    "jsonl": "application/jsonl",
    "parquet": "application/vnd.apache.parquet",
    "md": "text/markdown; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",  # the charts of cards written before they were SVG
}
# Sent with every job file: its type is not guessed, and a file opened on its own (an SVG
# chart) runs nothing and loads nothing, whatever it holds.
FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}


def media_type(fmt: str) -> str:
    """The media type a job file of format ``fmt`` is served as."""
    return MEDIA_TYPES.get(fmt, "application/octet-stream")


def safe_name(name: str) -> str:
    """A file name safe as the last part of an object name ("my data.jsonl" -> "my_data.jsonl")."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._") or "upload"
    return cleaned[:200]


class JobFiles:
    """Uploads, benchmarks and job files in the datasets object store."""

    def __init__(
        self,
        bus: Bus,
        jobs: JobStore,
        max_upload_bytes: int,
        check_benchmark: BenchmarkCheck | None = None,
    ) -> None:
        self._bus = bus
        self._jobs = jobs
        self._datasets = DatasetStore(bus)
        self._max = max_upload_bytes
        self._check_benchmark = check_benchmark

    async def _spool(self, chunks: AsyncIterator[bytes], dest: Path) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        with dest.open("wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > self._max:
                    raise PermanentError(
                        f"the upload is larger than TAXOFORGE_MAX_UPLOAD_BYTES ({self._max})"
                    )
                digest.update(chunk)
                fh.write(chunk)
        if size == 0:
            raise PermanentError("the upload is empty")
        return size, digest.hexdigest()

    async def upload(
        self, chunks: AsyncIterator[bytes], name: str, tenant: Tenant
    ) -> dict[str, Any]:
        """Store a file to select from; the same bytes under the same name get the same id
        (stored in the tenant's part of the object store, named by it in the tenant's terms)."""
        with tempfile.TemporaryDirectory(prefix="taxoforge-upload-") as tmp:
            path = Path(tmp) / "upload"
            size, sha = await self._spool(chunks, path)
            object_name = f"uploads/{sha[:16]}/{safe_name(name)}"
            await self._datasets.put_file(tenant.object(object_name), "upload", path, 0)
        return {"upload": object_name, "name": safe_name(name), "bytes": size, "sha256": sha}

    async def put_benchmark(
        self, name: str, chunks: AsyncIterator[bytes], tenant: Tenant
    ) -> dict[str, Any]:
        """Register (or replace) a benchmark's prompts for decontamination.

        The file is first stored under a name no listing shows and read by the selector as
        decontamination will read it; a file that yields no prompt is refused (and a
        benchmark it would have replaced stays as it was): registered, it would silently
        match nothing.
        """
        with tempfile.TemporaryDirectory(prefix="taxoforge-bench-") as tmp:
            path = Path(tmp) / "benchmark"
            size, sha = await self._spool(chunks, path)
            object_name = benchmark_object(tenant.benchmark(name))
            prompts = -1
            if self._check_benchmark is not None:
                # "~" is in no benchmark name, so the listing never shows the staged file.
                staged = f"{object_name}~check-{sha[:16]}"
                await self._datasets.put_file(staged, "benchmark", path, 0)
                try:
                    prompts, refusal = await self._check_benchmark(staged)
                finally:
                    store = await self._bus.datasets()
                    with contextlib.suppress(JSNotFoundError, ObjectNotFoundError):
                        await store.delete(staged)
                if prompts <= 0:
                    raise PermanentError(f"benchmark {name!r} is refused: {refusal}")
            await self._datasets.put_file(object_name, "benchmark", path, max(prompts, 0))
        info: dict[str, Any] = {"name": name, "bytes": size, "sha256": sha}
        if prompts >= 0:
            info["prompts"] = prompts
        return info

    async def benchmarks(self, tenant: Tenant) -> list[dict[str, Any]]:
        """The tenant's registered benchmarks."""
        prefix = benchmark_object(tenant.benchmark(""))
        store = await self._bus.datasets()
        try:
            infos = await store.list()
        except (JSNotFoundError, ObjectNotFoundError):
            return []
        return sorted(
            (
                {"name": i.name.removeprefix(prefix), "bytes": int(i.size or 0)}
                for i in infos
                if i.name.startswith(prefix) and "~" not in i.name[len(prefix) :] and not i.deleted
            ),
            key=lambda b: str(b["name"]),
        )

    async def benchmark(
        self, name: str, tenant: Tenant
    ) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
        """A registered benchmark's file as it was put: (name, bytes, sha256), and its bytes."""
        object_name = benchmark_object(tenant.benchmark(name))
        store = await self._bus.datasets()
        try:
            info = await store.get_info(object_name)
        except (JSNotFoundError, ObjectNotFoundError) as exc:
            raise NotFoundError(f"benchmark {name!r} is not registered") from exc
        if info.deleted:
            raise NotFoundError(f"benchmark {name!r} is not registered")
        digest = (info.digest or "").partition("=")[2]
        sha = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex() if digest else ""
        meta = {"name": name, "bytes": int(info.size or 0), "sha256": sha}
        return meta, self._datasets.stream(object_name)

    async def delete_benchmark(self, name: str, tenant: Tenant) -> None:
        store = await self._bus.datasets()
        try:
            await store.delete(benchmark_object(tenant.benchmark(name)))
        except (JSNotFoundError, ObjectNotFoundError) as exc:
            raise NotFoundError(f"benchmark {name!r} is not registered") from exc

    async def _finished(self, job_id: str, tenant: Tenant, listed: bool = False) -> pb.Job:
        """The tenant's job once it has succeeded; with ``listed``, also a job that failed
        with files (one that had nothing to select keeps meta/dropped.jsonl, the reasons)."""
        job = await self._jobs.get(job_id)
        if job is None or job.tenant != tenant.name:
            raise NotFoundError(f"job {job_id!r} does not exist")
        if listed and job.state == pb.JOB_STATE_FAILED and job.datasets:
            return job
        if job.state != pb.JOB_STATE_SUCCEEDED:
            raise ConflictError(
                f"job {job_id} is {state_name(job.state)}; its files exist once it has "
                f"succeeded (poll GET /v1/jobs/{job_id})"
            )
        return job

    async def file(
        self, job_id: str, path: str, tenant: Tenant
    ) -> tuple[pb.DatasetInfo, AsyncIterator[bytes]]:
        """One of a finished job's files by its path ("data/sft.parquet", "README.md")."""
        job = await self._finished(job_id, tenant, listed=True)
        name = f"{job_id}/{path}"
        info = next((d for d in job.datasets if d.object_name == name), None)
        if info is None:
            known = ", ".join(d.object_name.removeprefix(f"{job_id}/") for d in job.datasets)
            raise NotFoundError(f"job {job_id} has no file {path!r}; it has: {known}")
        return info, self._datasets.stream(info.object_name)

    async def dataset(
        self, job_id: str, kind: str, fmt: str, tenant: Tenant
    ) -> tuple[pb.DatasetInfo, AsyncIterator[bytes]]:
        """A finished job's export in one format."""
        job = await self._finished(job_id, tenant)
        info = next((d for d in job.datasets if d.kind == kind and d.format == fmt), None)
        if info is None:
            raise NotFoundError(f"job {job_id} has no {kind} dataset as {fmt}")
        return info, self._datasets.stream(info.object_name)

    async def record(self, job_id: str, item_id: str, tenant: Tenant) -> dict[str, Any]:
        """Where a record came from and why it was kept, or why it was dropped, with the
        drafts and candidates the quality gates discarded on the way (``discarded``)."""
        job = await self._finished(job_id, tenant, listed=True)
        wanted = {item_id, f"{job_id}/{item_id}"}
        found: dict[str, Any] | None = None
        discarded: list[dict[str, Any]] = []
        for kind in ("provenance", "dropped"):
            info = next((d for d in job.datasets if d.kind == kind), None)
            if info is None:
                continue
            async for line in _lines(self._datasets.stream(info.object_name)):
                if not any(w.encode() in line for w in wanted):
                    continue
                record = json.loads(line)
                if record.get("item_id") not in wanted and record.get("id") not in wanted:
                    continue
                if "candidate" in record:
                    discarded.append(record)
                elif found is None:
                    found = {"status": "kept" if kind == "provenance" else "dropped", **record}
        if found is None:
            raise NotFoundError(f"job {job_id} has no record {item_id!r}")
        return {**found, "discarded": discarded}


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    rest = b""
    async for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if rest.strip():
        yield rest
