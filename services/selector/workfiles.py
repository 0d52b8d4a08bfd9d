"""A selection's work files: JSON Lines in the object store, written and read a line at a time.

Each step of a selection reads what the one before wrote (``examples.jsonl``, ``clusters.json``)
from the job's objects, so any selector replica can run any step, and a step run twice reads
and writes the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taxoforge.bus import Bus
from taxoforge.composition import COMPOSITION_OBJECT
from taxoforge.datasets import DatasetStore, read_object, work_object
from taxoforge.errors import NotFoundError
from taxoforge.v1 import common_pb2 as pb

__all__ = ["download", "iter_jsonl", "put_job_file", "stored_composition", "work_object"]


async def download(datasets: DatasetStore, name: str, dest: Path) -> int:
    """Copy object ``name`` to ``dest`` chunk by chunk; returns its size.

    Raises:
        NotFoundError: no such object.
    """
    size = 0
    with dest.open("wb") as fh:
        async for chunk in datasets.stream(name):
            fh.write(chunk)
            size += len(chunk)
    return size


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON Lines file this service wrote, one at a time."""
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                value = json.loads(line)
                if isinstance(value, dict):
                    yield value


async def put_job_file(datasets: DatasetStore, job_id: str, rel: str, path: Path) -> pb.DatasetInfo:
    """Store ``path`` as the file ``rel`` of the job's folder ("meta/dropped.jsonl"), described
    with its kind, format and records (lines of JSON Lines, rows of Parquet)."""
    kind, fmt = _kind_of(rel)
    records = 0
    if fmt == "jsonl":
        with path.open("rb") as fh:
            records = sum(1 for line in fh if line.strip())
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        records = pq.ParquetFile(path).metadata.num_rows
    info = await datasets.put_file(f"{job_id}/{rel}", kind, path, records)
    info.format = fmt
    return info


def _kind_of(rel: str) -> tuple[str, str]:
    """A job file's kind and format from its path: data/sft.parquet -> ("sft", "parquet")."""
    name = rel.rsplit("/", 1)[-1]
    stem, _, fmt = name.rpartition(".")
    if rel == "README.md":
        return "card", "md"
    if rel.startswith("images/"):
        return "image", fmt
    return stem, fmt


async def stored_composition(bus: Bus, job_id: str) -> pb.Composition | None:
    """A generation job's plan cells as its review wrote them; None when it wrote none."""
    try:
        return pb.Composition.FromString(
            await read_object(bus, work_object(job_id, COMPOSITION_OBJECT))
        )
    except NotFoundError:
        return None
