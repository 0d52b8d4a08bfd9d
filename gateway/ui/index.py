"""A finished job's records as a SQLite index, so a filtered page of 100k records is one query.

A finished job's ``meta/provenance.jsonl`` (kept records), ``meta/dropped.jsonl`` (the rest,
with why) and its ``sft``/``preference`` JSON Lines exports (the texts) never change, so the
index is built once per job from those files and kept in the gateway's cache folder under the
job id and the files' sha256: a file that differs gets a new index, and a lost one is rebuilt.
The filter columns each have an index; a record's whole provenance and texts sit in a side
table read only when one record is opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "FACETS",
    "RecordFilter",
    "RecordIndex",
    "RecordPage",
    "build_index",
]

# Characters of a record's prompt shown in the list.
PREVIEW_CHARS = 160
# The columns a page filters on that have a fixed set of values (offered as choices).
FACETS = ("node", "language", "difficulty", "cluster", "reason", "shape")

_SCHEMA = """
CREATE TABLE records (
    ord INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    shape TEXT NOT NULL,
    node TEXT NOT NULL,
    language TEXT NOT NULL,
    difficulty TEXT NOT NULL,
    task_type TEXT NOT NULL,
    cluster TEXT NOT NULL,
    score REAL,
    reason TEXT NOT NULL,
    stage TEXT NOT NULL,
    why TEXT NOT NULL,
    preview TEXT NOT NULL,
    score_chosen REAL,
    score_rejected REAL,
    margin REAL
);
CREATE TABLE documents (item_id TEXT PRIMARY KEY, provenance TEXT NOT NULL, content TEXT);
CREATE TABLE discarded (item_id TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE facets (name TEXT PRIMARY KEY, value_list TEXT NOT NULL);
"""

# One index per filter column, each ending in ord so a page in export order is read straight
# from the index; status with reason because "dropped, reason X" is the common question.
_INDEXES = """
CREATE INDEX records_status ON records (status, reason, ord);
CREATE INDEX records_node ON records (node, ord);
CREATE INDEX records_language ON records (language, ord);
CREATE INDEX records_difficulty ON records (difficulty, ord);
CREATE INDEX records_cluster ON records (cluster, ord);
CREATE INDEX records_score ON records (score);
CREATE INDEX discarded_item ON discarded (item_id);
"""

_COLUMNS = (
    "ord",
    "item_id",
    "status",
    "shape",
    "node",
    "language",
    "difficulty",
    "task_type",
    "cluster",
    "score",
    "reason",
    "stage",
    "why",
    "preview",
    "score_chosen",
    "score_rejected",
    "margin",
)


@dataclass(frozen=True)
class RecordFilter:
    """What a records page asks for; empty fields do not filter."""

    node: str = ""
    language: str = ""
    difficulty: str = ""
    cluster: str = ""
    status: Literal["", "kept", "dropped"] = ""
    reason: str = ""
    score_min: float | None = None
    score_max: float | None = None

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        for column in ("node", "language", "difficulty", "cluster", "status", "reason"):
            value = getattr(self, column)
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.score_min is not None:
            clauses.append("score >= ?")
            args.append(self.score_min)
        if self.score_max is not None:
            clauses.append("score <= ?")
            args.append(self.score_max)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


@dataclass
class RecordPage:
    """One page of records (each a dict of the list's columns) and how many match."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass
class _Content:
    preview: str = ""
    score_chosen: float | None = None
    score_rejected: float | None = None
    documents: dict[str, Any] = field(default_factory=dict)


def _lines(path: Path | None) -> Iterator[dict[str, Any]]:
    if path is None or not path.exists():
        return
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            value = json.loads(line)
            if isinstance(value, dict):
                yield value


def _text(messages: object) -> str:
    """The text of a list of chat turns (the last turn's content for a reply)."""
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return ""


def _first_user(messages: object) -> str:
    if isinstance(messages, list):
        for turn in messages:
            if isinstance(turn, dict) and turn.get("role") == "user":
                return str(turn.get("content", ""))
    return ""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _contents(sft: Path | None, preference: Path | None) -> dict[str, _Content]:
    """Each exported record's texts by id: the SFT conversation and the preference pair."""
    out: dict[str, _Content] = {}
    for record in _lines(sft):
        content = out.setdefault(str(record.get("id", "")), _Content())
        content.preview = _first_user(record.get("messages"))
        content.documents["messages"] = record.get("messages", [])
    for record in _lines(preference):
        content = out.setdefault(str(record.get("id", "")), _Content())
        content.preview = content.preview or _first_user(record.get("prompt"))
        content.score_chosen = _number(record.get("score_chosen"))
        content.score_rejected = _number(record.get("score_rejected"))
        content.documents.update(
            prompt=_first_user(record.get("prompt")),
            chosen=_text(record.get("chosen")),
            rejected=_text(record.get("rejected")),
            score_chosen=content.score_chosen,
            score_rejected=content.score_rejected,
        )
    return out


def _score(record: dict[str, Any]) -> float | None:
    """The record's score on the judge's 1-100 scale (the selection quality when unjudged)."""
    for key in ("judge_score", "quality", "score"):
        value = _number(record.get(key))
        if value is not None:
            return value
    return None


def _row(
    ord_: int, status: str, record: dict[str, Any], content: _Content | None
) -> tuple[object, ...]:
    chosen = content.score_chosen if content else None
    rejected = content.score_rejected if content else None
    margin = chosen - rejected if chosen is not None and rejected is not None else None
    cluster = record.get("cluster_label") or record.get("cluster")
    if status == "kept":
        why = str(record.get("kept", ""))
        reason = ""
    else:
        why = str(record.get("detail", ""))
        reason = str(record.get("reason", ""))
    preview = content.preview if content and content.preview else str(record.get("query", ""))
    return (
        ord_,
        str(record.get("item_id", "")),
        status,
        str(record.get("shape", "")),
        str(record.get("node", "")),
        str(record.get("language", "")),
        str(record.get("difficulty", "")),
        str(record.get("task_type", "")),
        "" if cluster is None or cluster == -1 else str(cluster),
        _score(record),
        reason,
        str(record.get("stage", "")),
        why[:400],
        preview[:PREVIEW_CHARS],
        chosen,
        rejected,
        margin,
    )


def _batches(rows: Iterable[tuple[object, ...]], size: int = 5000) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_index(
    dest: Path,
    provenance: Path | None,
    dropped: Path | None,
    sft: Path | None = None,
    preference: Path | None = None,
) -> None:
    """Write the index of a job's records to ``dest`` (atomically: a reader sees the whole
    index or none). Kept records come first in export order, then dropped ones in file order."""
    contents = _contents(sft, preference)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        # A throwaway file until the rename: no journal, no fsync per statement.
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.executescript(_SCHEMA)
        seen: set[str] = set()
        documents: list[tuple[str, str, str | None]] = []
        discarded: list[tuple[str, str]] = []

        def rows() -> Iterator[tuple[object, ...]]:
            ord_ = 0
            sources = (("kept", provenance), ("dropped", dropped))
            for status, path in sources:
                for record in _lines(path):
                    item_id = str(record.get("item_id", ""))
                    if not item_id:
                        continue
                    if "candidate" in record:  # a discarded draft of an item, not the item
                        discarded.append((item_id, json.dumps(record)))
                        continue
                    if item_id in seen:
                        continue
                    seen.add(item_id)
                    content = contents.get(str(record.get("id", "")))
                    documents.append(
                        (
                            item_id,
                            json.dumps(record),
                            json.dumps(content.documents) if content else None,
                        )
                    )
                    ord_ += 1
                    yield _row(ord_, status, record, content)

        marks = ", ".join("?" * len(_COLUMNS))
        for batch in _batches(rows()):
            db.executemany(f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES ({marks})", batch)
            db.executemany("INSERT INTO documents VALUES (?, ?, ?)", documents)
            documents.clear()
        db.executemany("INSERT INTO discarded VALUES (?, ?)", discarded)
        db.executescript(_INDEXES)
        for name in FACETS:
            values = [
                v
                for (v,) in db.execute(
                    f"SELECT DISTINCT {name} FROM records WHERE {name} != '' ORDER BY {name}"
                )
            ]
            db.execute("INSERT INTO facets VALUES (?, ?)", (name, json.dumps(values)))
        db.execute("ANALYZE")
        db.commit()
    except BaseException:
        db.close()
        tmp.unlink(missing_ok=True)
        raise
    db.close()
    os.replace(tmp, dest)


class RecordIndex:
    """Reads one job's index (a connection per call: calls run in worker threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def page(self, wanted: RecordFilter, page: int = 1, per_page: int = 50) -> RecordPage:
        """The ``page``-th ``per_page`` records matching ``wanted``, in export order."""
        where, args = wanted.where()
        page = max(1, page)
        with self._db() as db:
            total = int(db.execute(f"SELECT COUNT(*) FROM records{where}", args).fetchone()[0])
            cursor = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM records{where} ORDER BY ord LIMIT ? OFFSET ?",
                [*args, per_page, (page - 1) * per_page],
            )
            rows = [dict(row) for row in cursor]
        return RecordPage(rows=rows, total=total, page=page, per_page=per_page)

    def facets(self) -> dict[str, list[str]]:
        """Every value of each facet column, for the filters' choices."""
        with self._db() as db:
            return {name: json.loads(values) for name, values in db.execute("SELECT * FROM facets")}

    def record(self, item_id: str) -> dict[str, Any] | None:
        """One record: its list columns, ``provenance`` (its line of provenance.jsonl or
        dropped.jsonl), ``content`` (its texts in the exports) and ``discarded`` (drafts and
        candidates the quality gates turned down on the way)."""
        with self._db() as db:
            row = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM records WHERE item_id = ?", (item_id,)
            ).fetchone()
            if row is None:
                return None
            doc = db.execute(
                "SELECT provenance, content FROM documents WHERE item_id = ?", (item_id,)
            ).fetchone()
            discarded = [
                json.loads(r[0])
                for r in db.execute("SELECT record FROM discarded WHERE item_id = ?", (item_id,))
            ]
        out = dict(row)
        out["provenance"] = json.loads(doc["provenance"]) if doc else {}
        out["content"] = json.loads(doc["content"]) if doc and doc["content"] else {}
        out["discarded"] = discarded
        return out
