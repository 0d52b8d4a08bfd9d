"""Vectors reused by content hash (process LRU, optional shared store), the encoder setting,
and an offline encoder that never opens a socket."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from taxoforge import embeddings
from taxoforge.embeddings import (
    CachedEmbedder,
    EmbedSettings,
    LocalMiniLM,
    VectorCache,
    make_encoder,
    text_key,
)
from taxoforge.minilm import MiniLM, OnnxMiniLM


class Counting:
    """An embedder that records every text it is asked for; vectors derive from the text."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        rows = [[float(len(t)), float(sum(map(ord, t)) % 97), 1.0] for t in texts]
        out = np.asarray(rows, dtype=np.float32)
        normed: NDArray[np.float32] = out / np.linalg.norm(out, axis=1, keepdims=True)
        return normed


class DictStore:
    """A shared vector store in a dict, counting reads and writes."""

    def __init__(self) -> None:
        self.items: dict[str, NDArray[np.float32]] = {}
        self.gets: list[list[str]] = []
        self.puts: list[list[str]] = []

    async def get_many(self, keys: Sequence[str]) -> Mapping[str, NDArray[np.float32]]:
        self.gets.append(list(keys))
        return {k: self.items[k] for k in keys if k in self.items}

    async def put_many(self, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        self.puts.append(list(vectors))
        self.items.update(vectors)


async def test_cache_returns_identical_vectors_and_skips_work() -> None:
    inner = Counting()
    embedder = CachedEmbedder(inner, "test", cache=VectorCache(100))
    first = await embedder.embed(["a", "bb", "a", "ccc"])
    assert inner.calls == [["a", "bb", "ccc"]]  # a repeat in one request is embedded once
    np.testing.assert_array_equal(first[0], first[2])
    again = await embedder.embed(["ccc", "a", "dddd"])
    assert inner.calls[1:] == [["dddd"]]  # only the new text
    np.testing.assert_array_equal(again[0], first[3])
    np.testing.assert_array_equal(again[1], first[0])
    assert (await embedder.embed(["a", "bb"])).shape == (2, 3)
    assert len(inner.calls) == 2
    first[0] *= 0  # the caller's array is its own
    np.testing.assert_array_equal((await embedder.embed(["a"]))[0], again[1])


async def test_cache_is_bounded_least_recently_used_first() -> None:
    inner = Counting()
    embedder = CachedEmbedder(inner, "test", cache=VectorCache(2))
    await embedder.embed(["a", "b"])
    await embedder.embed(["a"])  # a is now more recent than b
    await embedder.embed(["c"])  # evicts b
    assert len(embedder.cache) == 2
    await embedder.embed(["a", "b"])
    assert inner.calls[-1] == ["b"]
    none = CachedEmbedder(inner, "test", cache=VectorCache(0))
    await none.embed(["a"])
    await none.embed(["a"])
    assert inner.calls[-2:] == [["a"], ["a"]]


async def test_a_shared_store_is_read_first_and_filled() -> None:
    store = DictStore()
    one = CachedEmbedder(Counting(), "m", store, cache=VectorCache(10))
    made = await one.embed(["x", "y"])
    assert store.puts == [[text_key("m", "x"), text_key("m", "y")]]
    other_inner = Counting()  # another replica: empty LRU, same store
    other = CachedEmbedder(other_inner, "m", store, cache=VectorCache(10))
    got = await other.embed(["y", "z", "x"])
    assert other_inner.calls == [["z"]]
    np.testing.assert_array_equal(got[[0, 2]], made[[1, 0]])
    await other.embed(["x"])  # now in its LRU: the store is not asked again
    assert len(store.gets) == 2


def test_keys_name_the_model_and_hide_the_text() -> None:
    key = text_key("local/all-minilm-l6-v2#onnx-int8", "secret instruction")
    assert key.startswith("local/all-minilm-l6-v2#onnx-int8:")
    assert "secret" not in key
    assert key != text_key("local/all-minilm-l6-v2#numpy", "secret instruction")
    assert key != text_key("local/all-minilm-l6-v2#onnx-int8", "secret instruction ")


async def test_local_embedder_caches_per_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[list[str]] = []
    real = embeddings._shared_model

    def spy(encoder: str | None = None) -> MiniLM:
        model = real(encoder)

        class Spy:
            def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
                encoded.append(list(texts))
                return model.encode(texts)

        return Spy()  # type: ignore[return-value]

    monkeypatch.setattr(embeddings, "_shared_model", spy)
    embedder = LocalMiniLM("onnx-int8")
    embedder.cache.clear()
    texts = ["python decorators", "cooking pasta", "python decorators"]
    first = await embedder.embed(texts)
    second = await LocalMiniLM("onnx-int8").embed(texts[::-1])  # the process-wide cache
    assert encoded == [["python decorators", "cooking pasta"]]
    np.testing.assert_array_equal(second, first[::-1])
    np.testing.assert_allclose(first, real("onnx-int8").encode(texts), atol=1e-6)
    await LocalMiniLM("onnx").embed(texts[:1])  # other vectors, other cache
    assert encoded[-1] == ["python decorators"]
    assert (await embedder.embed([])).shape == (0, 384)


def test_encoder_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EmbedSettings().encoder == "onnx"  # exact on every CPU
    monkeypatch.setenv("TAXOFORGE_EMBED_ENCODER", "numpy")
    assert LocalMiniLM().encoder == "numpy"
    monkeypatch.setenv("TAXOFORGE_EMBED_ENCODER", "fast")
    with pytest.raises(ValueError, match="encoder"):
        EmbedSettings()
    with pytest.raises(ValueError, match="use onnx-int8, onnx, numpy, static"):
        LocalMiniLM("fast")
    with pytest.raises(ValueError, match="use onnx-int8, onnx, numpy, static"):
        make_encoder("fast")


def test_the_encoder_is_built_and_run_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the offline encoder opened a connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    model = make_encoder("onnx-int8")  # a fresh one: graph built from the installed wheel
    assert isinstance(model, OnnxMiniLM)
    vectors = model.encode(["offline", "no download"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


async def test_embedder_for_passes_a_store_on() -> None:
    from taxoforge.embeddings import LiteLLMEmbedder, embedder_for
    from taxoforge.llm.endpoints import LOCAL_EMBEDDER, Endpoint, ModelRegistry

    registry = ModelRegistry(
        [
            Endpoint("default", "openai/chat", "http://llm/v1"),
            Endpoint("small", "openai/text-embedding-3-small", "http://x/v1", roles=("embedder",)),
            Endpoint(LOCAL_EMBEDDER, LOCAL_EMBEDDER, roles=("embedder",)),
        ]
    )
    store = DictStore()
    local = embedder_for("", registry, store)
    assert isinstance(local, LocalMiniLM)
    local.cache.clear()
    await local.embed(["stored once"])
    assert store.puts == [[text_key("local/all-minilm-l6-v2#onnx", "stored once")]]
    remote = embedder_for("small", registry, store)
    assert isinstance(remote, CachedEmbedder) and isinstance(remote.inner, LiteLLMEmbedder)
    assert remote.namespace == "openai/text-embedding-3-small@http://x/v1"
    assert isinstance(embedder_for("small", registry), LiteLLMEmbedder)  # no store: as before


def test_each_selector_use_may_name_its_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = EmbedSettings()
    assert {u: settings.for_use(u) for u in ("tags", "cluster", "deita")} == {
        "tags": "static",
        "cluster": "onnx",
        "deita": "static",
    }
    monkeypatch.setenv("TAXOFORGE_EMBED_ENCODER", "onnx-int8")
    monkeypatch.setenv("TAXOFORGE_EMBED_TAGS_ENCODER", "onnx-int8")
    monkeypatch.setenv("TAXOFORGE_EMBED_DEITA_ENCODER", "onnx")
    monkeypatch.setenv("TAXOFORGE_EMBED_CLUSTER_ENCODER", "onnx")
    settings = EmbedSettings()
    assert settings.for_use("tags") == "onnx-int8"
    assert settings.for_use("deita") == settings.for_use("cluster") == "onnx"


def test_embedder_for_a_use_picks_its_encoder_and_truncation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from taxoforge.embeddings import embedder_for
    from taxoforge.llm.endpoints import ModelRegistry

    monkeypatch.setenv("TAXOFORGE_EMBED_DEITA_ENCODER", "onnx-int8")
    registry = ModelRegistry([])
    local = embedder_for("", registry, use="deita", max_tokens=128)
    assert isinstance(local, LocalMiniLM)
    assert (local.encoder, local.max_tokens) == ("onnx-int8", 128)
    assert isinstance(embedder_for("", registry), LocalMiniLM)
    assert embedder_for("", registry).encoder == "onnx"  # type: ignore[attr-defined]


async def test_truncated_vectors_are_cached_apart_and_truncated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int | None] = []

    class Spy:
        dim = 3

        def encode(
            self, texts: Sequence[str], max_tokens: int | None = None
        ) -> NDArray[np.float32]:
            asked.append(max_tokens)
            return np.full((len(texts), 3), 3**-0.5, dtype=np.float32)

    monkeypatch.setattr(embeddings, "_shared_model", lambda encoder=None: Spy())
    whole = LocalMiniLM("numpy")
    cut = LocalMiniLM("numpy", max_tokens=16)
    whole.cache.clear()
    cut.cache.clear()
    assert cut.cache is not whole.cache  # other vectors, other namespace
    await whole.embed(["a long instruction"])
    await cut.embed(["a long instruction"])
    await cut.embed(["a long instruction"])
    assert asked == [None, 16]
