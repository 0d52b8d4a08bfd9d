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

from taxoforge.datasets import DatasetStore

__all__ = ["download", "iter_jsonl", "work_object"]


def work_object(job_id: str, name: str) -> str:
    """The object name of one of a job's work files."""
    return f"{job_id}/work/{name}"


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
