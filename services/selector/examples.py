"""The selector's one record shape: an example, from a judged item or an imported row.

Every source (a generation job's judgments, in ``records``; JSON Lines or Parquet rows in the
messages, Alpaca, ShareGPT or preference shapes, in ``imports``) becomes an ``Example``;
selection reads examples as ``Candidate`` columns; every export format is written from examples
(``exports``, the only conversion to output formats). One JSON object per line in the job's
``examples.jsonl`` work object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from taxoforge import jsonl
from taxoforge.composition import cell_key
from taxoforge.selection import IMPORT_SHAPES
from taxoforge.tokens import messages_tokens_batch

__all__ = [
    "SHAPES",
    "Candidate",
    "Example",
    "Loaded",
    "Message",
    "Shape",
    "candidate_of",
    "examples_at",
    "load_examples",
]

Shape = Literal["messages", "alpaca", "sharegpt", "preference", "generated"]
SHAPES: tuple[str, ...] = IMPORT_SHAPES


class Message(TypedDict):
    """One chat turn: role is "system", "user" or "assistant"; content is plain text."""

    role: str
    content: str


class Example(TypedDict):
    """One record a dataset may keep.

    ``messages`` is the SFT conversation and ends with the assistant's reply; ``prompt``,
    ``chosen`` and ``rejected`` are the preference triple (conversational, explicit prompt).
    A preference row also has ``messages`` (its prompt and the chosen reply); an SFT row has no
    preference triple.
    """

    # "<job>/<item_id>": the id every export and the provenance file carry.
    id: str
    # The item's key in the job: "r0000042" for the 42nd row of an import, the generation
    # item id otherwise.
    item_id: str
    shape: Shape
    messages: list[Message]
    # What is tagged, deduplicated and compared: the user turns, joined by a blank line.
    query: str
    # The input the query's instruction is about, when the row gives it apart (Alpaca's
    # "input", the end of ``query``): dedup compares instructions without it.
    context: NotRequired[str]
    # The reply that is taught: the last assistant turn of ``messages``.
    response: str
    # o200k_base tokens of ``messages`` (taxoforge.tokens.messages_tokens); -1 in the work
    # file when screening left it to the select step (``count_tokens_of``).
    tokens: int
    prompt: NotRequired[list[Message]]
    chosen: NotRequired[list[Message]]
    rejected: NotRequired[list[Message]]
    # 1-based row of the imported file (imports only).
    row: NotRequired[int]
    language: NotRequired[str]
    # Taxonomy node path ("Science > Physics"), difficulty, task type (generated only).
    node: NotRequired[str]
    difficulty: NotRequired[str]
    task_type: NotRequired[str]
    # The generation job's judge score of the taught reply, on 1-100 (rubric scores x 10).
    judge_score: NotRequired[float]
    score_chosen: NotRequired[float]
    score_rejected: NotRequired[float]
    margin: NotRequired[float]
    # Provenance: where it came from and how it was made (models, templates, verdicts), and for
    # imports the row's other fields (its own "id" as "source_id").
    metadata: dict[str, Any]


@dataclass
class Candidate:
    """What selection needs of an example: small, so 100k of them fit in memory."""

    item_id: str
    query: str
    # The reply's length in characters: selection needs no more of it (the text stays in the
    # work file, read by offset where a step needs it), so 100k candidates stay small.
    response_chars: int
    tokens: int
    node: str = ""
    language: str = ""
    has_preference: bool = False
    # 1-100; None when the example has none.
    judge_score: float | None = None
    # Normalized tags (after the tag stage and normalization).
    tags: list[str] = field(default_factory=list)
    # Cluster index (0..k-1), set by clustering.
    cluster: int = -1
    # TACOS comparative score against its cluster's reference, 1-100; None when not compared.
    comparative: float | None = None
    # Generated examples: the plan cell (taxoforge.composition.cell_key) it was made for.
    cell: str = ""

    @property
    def quality(self) -> float | None:
        """The score selection ranks by: the comparative score, else the judge's."""
        return self.comparative if self.comparative is not None else self.judge_score


def candidate_of(example: Example) -> Candidate:
    """What selection needs of an example."""
    return Candidate(
        item_id=example["item_id"],
        query=example["query"],
        response_chars=len(example["response"]),
        tokens=example["tokens"],
        node=example.get("node", ""),
        language=example.get("language", ""),
        has_preference="chosen" in example,
        judge_score=example.get("judge_score"),
        cell=_cell(example),
    )


def _cell(example: Example) -> str:
    """A generated example's plan cell; "" for imported rows."""
    if example.get("shape") != "generated":
        return ""
    meta = example.get("metadata", {})
    return cell_key(
        str(meta.get("node_id", "")),
        example.get("language", ""),
        example.get("difficulty", ""),
        example.get("task_type", ""),
    )


@dataclass
class Loaded:
    """The work file's examples as candidates, and where each one's line starts."""

    candidates: list[Candidate]
    offsets: list[int]


def load_examples(path: Path) -> Loaded:
    """The work file's examples as candidates, with each one's byte offset."""
    out = Loaded([], [])
    with path.open("rb") as fh:
        offset = 0
        for line in fh:
            if line.strip():
                out.candidates.append(candidate_of(jsonl.loads_fields(line)))
                out.offsets.append(offset)
            offset += len(line)
    return out


# Conversations counted at once by ``count_tokens_of`` (bounds the texts held in memory).
_COUNT_BATCH = 2048


def count_tokens_of(path: Path, loaded: Loaded, rows: Iterable[int]) -> int:
    """Count the tokens of the candidates at ``rows`` that screening left uncounted (-1),
    their conversations read back from the work file at ``path``; returns how many it counted.

    Screening counts every example only for a budget in tokens (the methods then need every
    count); for a budget in records only the records the methods pick need theirs, for the
    report, the measures and the provenance.
    """
    cands = loaded.candidates
    missing = sorted({i for i in rows if cands[i].tokens < 0})
    with path.open("rb") as fh:
        for start in range(0, len(missing), _COUNT_BATCH):
            batch = missing[start : start + _COUNT_BATCH]
            conversations = []
            for i in batch:
                fh.seek(loaded.offsets[i])
                conversations.append(jsonl.loads_fields(fh.readline())["messages"])
            counts = messages_tokens_batch(conversations, threads=2)  # the other core is idle
            for i, count in zip(batch, counts, strict=True):
                cands[i].tokens = count
    return len(missing)


def examples_at(path: Path, offsets: Iterable[int]) -> Iterator[Example]:
    """The work file's examples whose lines start at ``offsets``, in that order."""
    with path.open("rb") as fh:
        for offset in offsets:
            fh.seek(offset)
            example: Example = json.loads(fh.readline())
            yield example
