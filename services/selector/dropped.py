"""Why an item was left out: the lines of a job's ``meta/dropped.jsonl``.

Every planned item of a generation job and every row of an imported file ends either in the
exports (``meta/provenance.jsonl``) or in ``meta/dropped.jsonl``, with the stage that left it
out and why, so a job accounts for each of its items by id. Each line carries at least ``id``
("<job>/<item>"), ``item_id``, ``stage`` and ``reason``; an imported row also its ``row``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Dropped", "drop_record", "import_row", "iter_drops", "stage_of"]

# The stage that leaves an item out for each reason the selector gives; a generation
# failure names its own stage (plan, instruct, respond, refine, judge).
_STAGE_OF_REASON = {
    "malformed": "import",
    "duplicate": "dedup",
    "near_duplicate": "dedup",
    "contaminated": "decontaminate",
    "unusable": "judge",
    "not_selected": "select",
}


# An imported row's item id: "r0000042" is row 42 (services.selector.examples.Example).
_IMPORT_ID = re.compile(r"r([0-9]+)")


def import_row(item_id: str) -> int | None:
    """The row number of an imported row's item id, or None for any other id."""
    match = _IMPORT_ID.fullmatch(item_id)
    return int(match.group(1)) if match else None


def stage_of(reason: str, row: bool = False) -> str:
    """The stage behind a drop ``reason``; an unknown reason is the import's when the drop
    names a row (a row that never became an example), else the prepare step's."""
    return _STAGE_OF_REASON.get(reason, "import" if row else "prepare")


def drop_record(
    job_id: str, item_id: str, reason: str, stage: str = "", **extra: Any
) -> dict[str, Any]:
    """One line of ``dropped.jsonl``; an imported row's line names its row."""
    if "row" not in extra and (row := import_row(item_id)) is not None:
        extra["row"] = row
    return {
        "id": f"{job_id}/{item_id}",
        "item_id": item_id,
        "stage": stage or stage_of(reason, "row" in extra),
        "reason": reason,
        **extra,
    }


@dataclass(frozen=True)
class Dropped:
    """An item that never became an example (a generation item that failed or was judged
    unusable), on its way to ``dropped.jsonl``."""

    item_id: str
    stage: str
    reason: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, job_id: str) -> dict[str, Any]:
        """Its line of ``dropped.jsonl``."""
        extra = dict(self.extra)
        if self.detail:
            extra["detail"] = self.detail
        return drop_record(job_id, self.item_id, self.reason, self.stage, **extra)

    def to_json(self) -> dict[str, Any]:
        """As a line of a work file (``read_generated`` reads it back with ``from_json``)."""
        out: dict[str, Any] = {
            "item_id": self.item_id,
            "dropped": self.reason,
            "stage": self.stage,
        }
        if self.detail:
            out["detail"] = self.detail
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Dropped:
        return cls(
            item_id=str(value["item_id"]),
            stage=str(value.get("stage") or "prepare"),
            reason=str(value["dropped"]),
            detail=str(value.get("detail", "")),
            extra=dict(value.get("extra") or {}),
        )


def iter_drops(path: Path, job_id: str) -> Iterator[dict[str, Any]]:
    """The lines of a ``dropped.jsonl`` work file, one at a time, each with its id, item id,
    stage and reason (a line from before drops had stages gets the stage of its reason)."""
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            value = json.loads(line)
            if not isinstance(value, dict) or not value.get("item_id"):
                continue
            item_id = str(value["item_id"])
            reason = str(value.get("reason") or "dropped")
            if "row" not in value and (row := import_row(item_id)) is not None:
                value["row"] = row
            value["id"] = value.get("id") or f"{job_id}/{item_id}"
            value["stage"] = value.get("stage") or stage_of(reason, "row" in value)
            value["reason"] = reason
            yield value
