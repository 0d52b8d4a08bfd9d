"""Tag vectors kept on the machine's disk across jobs (bounded, safe under concurrent
writers), and releasing the shared local encoders."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from taxoforge import embeddings
from taxoforge.embeddings import (
    DiskVectorStore,
    LocalMiniLM,
    embedder_for,
    release_local_models,
    tag_store,
)
from taxoforge.llm.endpoints import ModelRegistry


def vec(seed: int, dim: int = 4) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def test_vectors_come_back_bit_for_bit(tmp_path: Path) -> None:
    store = DiskVectorStore(tmp_path / "v.sqlite", dim=4, size=10)
    store.write({"a": vec(1), "b": vec(2)})
    found = DiskVectorStore(tmp_path / "v.sqlite", dim=4, size=10).read(["b", "zz", "a"])
    assert set(found) == {"a", "b"}
    np.testing.assert_array_equal(found["a"], vec(1))
    np.testing.assert_array_equal(found["b"], vec(2))
    store.write({"c": vec(3, dim=5)})  # another width: never stored, never served
    assert store.read(["c"]) == {}


def test_the_store_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    store = DiskVectorStore(tmp_path / "v.sqlite", dim=4, size=3)
    for key in "abc":
        store.write({key: vec(ord(key))})
    assert set(store.read(["a"])) == {"a"}  # a used again: b is now the oldest
    store.write({"d": vec(4)})
    assert set(store.read(list("abcd"))) == {"a", "c", "d"}


def test_many_writers_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"

    def writer(n: int) -> None:
        store = DiskVectorStore(path, dim=4, size=10_000)  # its own connection
        for i in range(40):
            store.write({f"w{n}-{i}": vec(n * 100 + i), f"shared-{i}": vec(i)})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [f"w{n}-{i}" for n in range(6) for i in range(40)] + [f"shared-{i}" for i in range(40)]
    found = DiskVectorStore(path, dim=4, size=10_000).read(keys)
    assert len(found) == len(keys)
    np.testing.assert_array_equal(found["w5-39"], vec(539))


def test_a_store_that_cannot_open_reads_empty_and_writes_nothing(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    store = DiskVectorStore(blocked / "v.sqlite", dim=4, size=10)
    store.write({"a": vec(1)})
    assert store.read(["a"]) == {}


class Spy:
    dim = 384

    def __init__(self) -> None:
        self.encoded: list[list[str]] = []

    def encode(self, texts: Sequence[str], max_tokens: int | None = None) -> NDArray[np.float32]:
        self.encoded.append(list(texts))
        rows = np.stack([vec(len(t), 384) for t in texts])
        out: NDArray[np.float32] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return out


def sqlite_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.suffix == ".sqlite"]


async def test_a_later_job_embeds_only_its_new_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXOFORGE_EMBED_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TAXOFORGE_EMBED_TAGS_ENCODER", "onnx")  # the spy's width, 384
    spy = Spy()
    monkeypatch.setattr(embeddings, "_shared_model", lambda encoder=None: spy)
    registry = ModelRegistry([])
    first = embedder_for("", registry, use="tags")
    assert isinstance(first, LocalMiniLM)
    first.cache.clear()
    made = await first.embed(["python", "cooking"])
    first.cache.clear()  # a new process: only the disk remembers
    again = await embedder_for("", registry, use="tags").embed(["cooking", "gardening"])
    assert spy.encoded == [["python", "cooking"], ["gardening"]]
    np.testing.assert_array_equal(again[0], made[1])
    store = tag_store("onnx")
    assert store is not None and sqlite_files(tmp_path) == [store.path.name]
    # Other uses and truncated vectors are not kept on disk.
    first.cache.clear()
    other = embedder_for("", registry, use="cluster")
    await other.embed(["python"])
    assert spy.encoded[-1] == ["python"]


def test_the_tag_store_is_named_by_encoder_and_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXOFORGE_EMBED_CACHE_DIR", str(tmp_path))
    onnx, int8 = (tag_store(e) for e in ("onnx", "onnx-int8"))
    assert onnx is not None and int8 is not None
    assert onnx.path != int8.path
    assert onnx.dim == 384
    # the static encoder makes its vectors faster than a store gives them back
    assert tag_store("static") is None
    assert tag_store("onnx") is onnx  # one per process and file
    monkeypatch.setenv("TAXOFORGE_EMBED_TAG_STORE_SIZE", "0")
    assert tag_store("onnx") is None
    local = embedder_for("", ModelRegistry([]), use="tags")
    assert isinstance(local, LocalMiniLM) and local._cached.store is None


def test_releasing_drops_the_shared_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def make(kind: str) -> Spy:
        built.append(kind)
        return Spy()

    monkeypatch.setattr(embeddings, "make_encoder", make)
    monkeypatch.setattr(embeddings, "_models", {})
    first = embeddings._shared_model("numpy")
    embeddings._shared_model("static")
    assert embeddings._shared_model("numpy") is first and built == ["numpy", "static"]
    release_local_models("numpy")
    assert set(embeddings._models) == {"static"}
    assert embeddings._shared_model("numpy") is not first
    release_local_models()
    assert embeddings._models == {}
