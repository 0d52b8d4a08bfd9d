"""The select step's last check: a planned item missing from both the exports and the drops
is listed in dropped.jsonl, never lost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.selector.selection import SelectionRunner
from taxoforge.store import ItemKind
from taxoforge.v1 import common_pb2 as pb


class _Items:
    def __init__(self, outcomes: list[pb.ItemOutcome]) -> None:
        self.outcomes = outcomes
        self.scans = 0

    async def scan(self, job_id: str, kind: ItemKind, message: Any) -> AsyncIterator[Any]:
        assert kind is ItemKind.OUTCOME
        self.scans += 1
        for outcome in self.outcomes:
            yield outcome


def _runner(items: _Items) -> SelectionRunner:
    return SelectionRunner(SimpleNamespace(bus=None, items=items))  # type: ignore[arg-type]


async def test_a_planned_item_missing_everywhere_is_listed(tmp_path: Path) -> None:
    items = _Items(
        [
            pb.ItemOutcome(item_id="i0000000", judged=True),
            pb.ItemOutcome(item_id="i0000001", failed_stage="respond"),
            pb.ItemOutcome(item_id="i0000002", judged=True),
        ]
    )
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text('{"item_id": "i0000000"}\n')
    job = pb.Job(id="j-1", kind="generate", planned=3)

    await _runner(items)._account(job, pb.SelectionReport(), {"i0000000"}, dropped)

    lines = [json.loads(line) for line in dropped.read_text().splitlines()]
    assert [(d["item_id"], d.get("stage"), d.get("reason")) for d in lines] == [
        ("i0000000", None, None),
        ("i0000001", "respond", "failed"),
        ("i0000002", "select", "failed"),
    ]


async def test_nothing_is_read_when_every_item_is_accounted_for(tmp_path: Path) -> None:
    items = _Items([])
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("")
    job = pb.Job(id="j-1", kind="generate", planned=2)

    await _runner(items)._account(job, pb.SelectionReport(), {"i0000000", "i0000001"}, dropped)

    assert items.scans == 0 and dropped.read_text() == ""


async def test_deita_embeds_only_the_instructions_truncated_with_its_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    import numpy as np

    from services.selector import selection
    from services.selector.examples import Candidate

    asked: list[tuple[str | None, int | None]] = []
    texts: list[list[str]] = []

    class Embedder:
        async def embed(self, batch: list[str]) -> np.ndarray:
            texts.append(list(batch))
            return np.ones((len(batch), 2), dtype=np.float32)

    def embedder_of(
        job: pb.Job, registry: Any, use: str | None = None, max_tokens: int | None = None
    ) -> Embedder:
        asked.append((use, max_tokens))
        return Embedder()

    monkeypatch.setattr(selection, "embedder_of", embedder_of)
    runner = SelectionRunner(SimpleNamespace(bus=None, llm=SimpleNamespace(registry=None)))  # type: ignore[arg-type]
    cands = [
        Candidate(
            item_id=f"i{i}",
            query=f"question {i}",
            response_chars=len(f"a long answer {i}"),
            tokens=5,
        )
        for i in range(3)
    ]
    embedded: list[int] = []
    embed = runner._deita_embedder(pb.Job(id="j-1"), cands, embedded)
    vectors = await asyncio.to_thread(embed, np.array([2, 0], dtype=np.int64))
    assert vectors.shape == (2, 2) and embedded == [2]
    assert texts == [["question 2", "question 0"]]
    assert asked == [("deita", selection.DEITA_MAX_TOKENS)] and selection.DEITA_MAX_TOKENS == 128
