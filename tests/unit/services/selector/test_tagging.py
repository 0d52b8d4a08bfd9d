"""Tag pages: a job's examples cut into numbered pages (by rows and by bytes, the same each
time), and a page tagged with every row's outcome: tags, or why it has none."""

from __future__ import annotations

from typing import Any

import pytest

from services.selector.examples import Example
from services.selector.tagging import MAX_QUERY_CHARS, Tagger, TagVerdict, tag_pages
from taxoforge.errors import TransientError
from taxoforge.llm import StructuredOutputError
from taxoforge.v1 import common_pb2 as pb


def _examples(n: int, query: str = "question {i}") -> list[Example]:
    return [{"item_id": f"r{i:04d}", "query": query.format(i=i)} for i in range(n)]  # type: ignore[typeddict-item]


def test_pages_are_numbered_in_order_and_cut_by_rows() -> None:
    pages = list(tag_pages("j1", _examples(10), rows=4))
    assert [p.item_id for p in pages] == ["p000000", "p000001", "p000002"]
    assert [len(p.rows) for p in pages] == [4, 4, 2]
    assert [r.item_id for p in pages for r in p.rows] == [f"r{i:04d}" for i in range(10)]
    assert all(p.job_id == "j1" and all(r.job_id == "j1" for r in p.rows) for p in pages)
    assert pages == list(tag_pages("j1", _examples(10), rows=4))  # a rerun queues the same


def test_pages_stop_short_of_the_byte_limit_and_carry_what_the_tagger_reads() -> None:
    long = "x" * (MAX_QUERY_CHARS + 500) + "{i}"
    pages = list(tag_pages("j1", _examples(5, long), rows=64, max_bytes=2 * MAX_QUERY_CHARS + 200))
    assert [len(p.rows) for p in pages] == [2, 2, 1]
    assert all(len(r.query) == MAX_QUERY_CHARS for p in pages for r in p.rows)
    assert all(p.ByteSize() <= 2 * MAX_QUERY_CHARS + 400 for p in pages)
    # A single row larger than the limit still gets a page of its own.
    (one,) = tag_pages("j1", _examples(1, long), max_bytes=10)
    assert len(one.rows) == 1


def test_no_examples_no_pages() -> None:
    assert list(tag_pages("j1", [])) == []


class _FakeLLM:
    """A FAKE model client: tags a query with its own words, refuses or breaks on cue."""

    async def structured(
        self, role: str, cfg: pb.ModelConfig, messages: list[dict[str, str]], output: Any, **kw: Any
    ) -> tuple[TagVerdict, pb.LLMCall]:
        query = messages[-1]["content"]
        if "unparseable" in query:
            raise StructuredOutputError(
                "tagger reply did not match TagVerdict after 3 attempts",
                pb.LLMCall(invalid_replies=3),
            )
        if "down" in query:
            raise TransientError("model unavailable")
        return TagVerdict(tags=["python", "Python", "  lists "]), pb.LLMCall(role=role)


async def test_a_page_keeps_each_rows_tags_and_why_a_row_has_none() -> None:
    tagger = Tagger(_FakeLLM())  # type: ignore[arg-type]
    page = pb.TagPage(
        job_id="j1",
        item_id="p000000",
        rows=[
            pb.TagTask(job_id="j1", item_id="r1", query="sort a list in python"),
            pb.TagTask(job_id="j1", item_id="r2", query="unparseable"),
        ],
    )
    tagged = await tagger.tag_page(page, pb.ModelConfig(model="fake"))
    assert tagged.item_id == "p000000"
    ok, bad = tagged.rows
    assert (ok.item_id, list(ok.tags), ok.failed) == ("r1", ["python", "lists"], "")
    assert bad.item_id == "r2" and not bad.tags
    assert "did not match" in bad.failed
    assert bad.call.invalid_replies == 3 and bad.call.template == "tag"


async def test_a_fault_that_may_clear_fails_the_whole_page() -> None:
    tagger = Tagger(_FakeLLM())  # type: ignore[arg-type]
    page = pb.TagPage(
        job_id="j1",
        item_id="p000001",
        rows=[
            pb.TagTask(job_id="j1", item_id="r1", query="fine"),
            pb.TagTask(job_id="j1", item_id="r2", query="the model is down"),
        ],
    )
    # The error itself, not a group: the worker retries a page by its error's type.
    with pytest.raises(TransientError, match="model unavailable"):
        await tagger.tag_page(page, pb.ModelConfig(model="fake"))
