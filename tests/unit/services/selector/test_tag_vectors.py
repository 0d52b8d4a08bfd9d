"""Tag vectors made ahead of the cluster step: what the tag step's pages carry is embedded in
the background, so the cluster step's normalization embeds only what is still missing, and
gets the same result."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from services.selector import tag_vectors
from services.selector.tag_vectors import TagPrefetch
from taxoforge import embeddings
from taxoforge.embeddings import LocalMiniLM
from taxoforge.errors import PermanentError
from taxoforge.labels import normalize_labels

TAGS = [
    "Data Structures",
    "data structure",
    "data-structures!",
    "Cooking",
    "cookery",
    "recipes",
    "Machine Learning",
    "machine-learning",
    "Poetry",
    "",
]


@pytest.fixture
def fresh_static(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The static encoder (fast) with an empty process cache and no disk store."""
    monkeypatch.setenv("TAXOFORGE_EMBED_TAG_STORE_SIZE", "0")
    LocalMiniLM("static").cache.clear()
    yield
    LocalMiniLM("static").cache.clear()
    embeddings.release_local_models("static")


async def _drained(prefetch: TagPrefetch, job_id: str) -> None:
    for _ in range(500):
        if not prefetch.queued(job_id) and prefetch._running is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the prefetch never drained")


async def _embedded_by_normalizing(labels: list[str]) -> tuple[list[str], object]:
    """What normalization asked the model for (texts not cached), and its mapping."""
    embedder = LocalMiniLM("static")
    inner = embedder._cached.inner
    asked: list[str] = []
    original = inner.embed

    async def spy(texts: Sequence[str]) -> NDArray[np.float32]:
        asked.extend(texts)
        return await original(texts)

    inner.embed = spy  # type: ignore[method-assign]
    normalized = await normalize_labels(labels, embedder, min_frequency=1, threshold=0.9)
    return asked, normalized.mapping


@pytest.mark.usefixtures("fresh_static")
async def test_the_cluster_step_embeds_nothing_the_tag_step_embedded_ahead() -> None:
    without, mapping = await _embedded_by_normalizing(TAGS)
    assert len(without) == 6  # every distinct canonical form, the first time
    LocalMiniLM("static").cache.clear()

    prefetch = TagPrefetch(idle_release_s=0.05)
    prefetch.add("j1", lambda: LocalMiniLM("static"), TAGS[:5])
    prefetch.add("j1", lambda: LocalMiniLM("static"), TAGS[3:])  # repeats are skipped
    await _drained(prefetch, "j1")
    assert await prefetch.settle("j1") == (len(set(TAGS)), 0)
    assert await prefetch.settle("j1") == (0, 0)  # settled: nothing of the job is kept
    with_ahead, mapping_ahead = await _embedded_by_normalizing(TAGS)
    assert with_ahead == []  # all found in the cache
    assert mapping_ahead == mapping
    assert "static@1" not in embeddings._models  # settled: the background model is gone


@pytest.mark.usefixtures("fresh_static")
async def test_settling_stops_the_queue_and_the_rest_is_embedded_by_the_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tag_vectors, "_BATCH", 2)
    many = [f"topic number {i}" for i in range(40)]
    prefetch = TagPrefetch()
    prefetch.add("j1", lambda: LocalMiniLM("static"), many)
    await asyncio.sleep(0)  # the first batch starts
    ahead, left = await prefetch.settle("j1")
    assert ahead == 2 and left == 38  # the batch under way ends; the queue is dropped
    assert prefetch.queued("j1") == 0 and prefetch._running is None
    asked, mapping = await _embedded_by_normalizing(many)
    assert 0 < len(asked) < 40  # some embedded ahead, the rest by the step
    assert set(mapping) == set(many)


async def test_only_the_local_model_is_embedded_ahead() -> None:
    class Declared:
        async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
            raise AssertionError("a declared model is never called ahead")

    made: list[str] = []

    def make() -> Declared:
        made.append("x")
        return Declared()

    prefetch = TagPrefetch()
    prefetch.add("j1", make, TAGS)
    prefetch.add("j1", make, TAGS)
    assert made == ["x"]  # asked once per job
    assert prefetch.queued("j1") == 0 and prefetch._task is None
    await prefetch.settle("j1")


async def test_a_job_whose_embedder_cannot_be_made_is_left_to_the_cluster_step() -> None:
    def undeclared() -> LocalMiniLM:
        raise PermanentError("embedder: no model named 'gone' here")

    prefetch = TagPrefetch()
    prefetch.add("j1", undeclared, TAGS)  # the tag page is stored: this must not fail it
    prefetch.add("j1", undeclared, TAGS)
    assert prefetch.queued("j1") == 0 and prefetch._task is None
    await prefetch.settle("j1")


@pytest.mark.usefixtures("fresh_static")
async def test_a_failing_batch_leaves_the_job_to_the_cluster_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(raw: list[str]) -> list[str]:
        raise RuntimeError("lemmatizer gone")

    monkeypatch.setattr(tag_vectors, "_canonical_forms", broken)
    prefetch = TagPrefetch(idle_release_s=0.05)
    prefetch.add("j1", lambda: LocalMiniLM("static"), TAGS)
    await _drained(prefetch, "j1")
    assert prefetch.queued("j1") == 0
    await prefetch.settle("j1")
    asked, _ = await _embedded_by_normalizing(TAGS)
    assert len(asked) == 6


@pytest.mark.usefixtures("fresh_static")
async def test_an_idle_prefetch_gives_its_model_back() -> None:
    prefetch = TagPrefetch(idle_release_s=0.05)
    prefetch.add("j1", lambda: LocalMiniLM("static"), TAGS)
    await _drained(prefetch, "j1")
    assert "static@1" in embeddings._models
    for _ in range(200):
        if "static@1" not in embeddings._models:
            break
        await asyncio.sleep(0.01)
    assert "static@1" not in embeddings._models


@pytest.mark.usefixtures("fresh_static")
async def test_tags_after_an_idle_release_are_embedded_too() -> None:
    prefetch = TagPrefetch(idle_release_s=0.0)
    prefetch.add("j1", lambda: LocalMiniLM("static"), TAGS[:3])
    await _drained(prefetch, "j1")
    await asyncio.sleep(0)  # the idle release starts
    prefetch.add("j1", lambda: LocalMiniLM("static"), TAGS[3:])
    await _drained(prefetch, "j1")
    for _ in range(200):  # the second drain runs once the release is done
        if prefetch._task is not None and prefetch._task.done():
            break
        await asyncio.sleep(0.01)
    await prefetch.settle("j1")
    asked, _ = await _embedded_by_normalizing(TAGS)
    assert asked == []
