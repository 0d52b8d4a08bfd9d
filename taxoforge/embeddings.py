"""Text embeddings for the ``embedder`` role.

The default, ``local/all-minilm-l6-v2``, runs all-MiniLM-L6-v2 offline (no PyTorch, nothing
downloaded): by ONNX Runtime in float32 (the reference's vectors, ~2.3x the numpy code) unless
``TAXOFORGE_EMBED_ENCODER`` names ``onnx-int8`` (int8 dense layers with 7-bit weights, which
never saturate ONNX Runtime's u8 x s8 kernels, so it is within ~0.99 cosine on every CPU; ~1.4x
faster where the CPU has VNNI, 0.87x float32's rate on one with AVX2 alone), ``static``
(:mod:`taxoforge.static_embed`: a token table distilled from the same model, tens of times
faster, coarser) or ``numpy`` (:mod:`taxoforge.minilm`'s reference code).
Each of the selector's uses (tag normalization, clustering, DEITA) may name its own encoder
(:meth:`EmbedSettings.for_use`). Its vectors are kept in a
process-wide LRU keyed by content hash, so a text seen again (tags repeat across a job's steps)
costs nothing; :class:`CachedEmbedder` adds the same for any embedder, optionally backed by a
shared :class:`VectorStore`. Any other is a model the operator declared for the embedder role
(:mod:`taxoforge.llm.endpoints`), called through
litellm with its own address and key; a request only ever names it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import gc
import hashlib
import os
import random
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import structlog
from numpy.typing import NDArray
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from taxoforge import model_cache
from taxoforge.errors import PermanentError, TransientError
from taxoforge.llm.endpoints import Endpoint, ModelChoiceError, ModelRegistry
from taxoforge.minilm import GRAPH_VERSION, MiniLM, OnnxMiniLM, installed_model_dir
from taxoforge.model_cache import content_hash
from taxoforge.static_embed import StaticMiniLM

__all__ = [
    "LOCAL_MODEL",
    "CachedEmbedder",
    "DiskVectorStore",
    "EmbedSettings",
    "Embedder",
    "LiteLLMEmbedder",
    "LocalMiniLM",
    "TextEncoder",
    "VectorCache",
    "VectorStore",
    "cosine_matrix",
    "embedder_for",
    "make_encoder",
    "make_model_files",
    "release_local_models",
    "tag_store",
    "text_key",
]

log = structlog.get_logger(__name__)

LOCAL_MODEL = "local/all-minilm-l6-v2"

Encoder = Literal["onnx-int8", "onnx", "numpy", "static"]
ENCODERS = ("onnx-int8", "onnx", "numpy", "static")
# What the selector embeds: tags (normalization), clustering's texts, DEITA's walk.
Use = Literal["tags", "cluster", "deita"]


class EmbedSettings(BaseSettings):
    """How the local embedder runs (prefix ``TAXOFORGE_EMBED_``)."""

    model_config = SettingsConfigDict(env_prefix="TAXOFORGE_EMBED_", extra="ignore")

    # onnx: the reference's vectors (float32), the default because it is exact and fast on
    # every CPU; onnx-int8: within ~0.99 cosine, ~1.4x faster with VNNI but slower without
    # (benchmarks/embed_bench.py on AVX2: 552 tags/s against 634); numpy: the reference
    # code itself; static: a distilled token table, ~60x faster than onnx, coarser.
    encoder: Encoder = "onnx"
    # Per use, overriding ``encoder`` (None: ``encoder``), chosen by benchmarks/embed_bench.py
    # --corpus realistic. DEITA: static chose the same 500 of 1,000 instructions as onnx at
    # 0.9, at ~76x its rate (20k instructions/s against 266). Tags: static, now that the
    # labels' spelling step merges the typos it misses (benchmarks/tag_quality_bench.py, 100k
    # rows: 98.2% of tag occurrences keep their concept, against 98.4% with onnx and 97.1%
    # with onnx before the spelling step, embedded in ~5 s against ~40-70 s; both merge the
    # same 8 of 20 common near-synonym pairs at 0.85 and none of 20 related distinct ones).
    # Clustering by embedding stays with ``encoder``: static shares 14% of onnx's 10 nearest
    # neighbours of an instruction.
    tags_encoder: Encoder | None = "static"
    cluster_encoder: Encoder | None = None
    deita_encoder: Encoder | None = "static"
    # Vectors kept per process (384 float32 each, ~1.7 KiB with the key): 50k is ~85 MiB.
    cache_size: int = Field(default=50_000, ge=0)
    # The static encoder: its table's width (0: the model's 384). Where files made once per
    # machine are kept (the static table, the ONNX graphs; None: $XDG_CACHE_HOME/taxoforge or
    # ~/.cache/taxoforge).
    static_dims: int = Field(default=256, ge=0)
    # Tag vectors kept on disk per local encoder (under ``cache_dir``), so a later job over
    # similar data embeds only its new tags: ~2 KiB each on disk (100k is ~200 MiB, a few
    # 100k-row jobs' ~30k distinct tags each); 0 keeps none.
    tag_store_size: int = Field(default=100_000, ge=0)
    cache_dir: Path | None = None

    def for_use(self, use: Use) -> str:
        """The encoder for one of the selector's uses."""
        chosen = {
            "tags": self.tags_encoder,
            "cluster": self.cluster_encoder,
            "deita": self.deita_encoder,
        }[use]
        return chosen or self.encoder


_models: dict[str, TextEncoder] = {}
_model_lock = threading.Lock()


class TextEncoder(Protocol):
    """A local model: texts in, L2-normalized rows out (run in the caller's thread)."""

    dim: int

    def encode(self, texts: Sequence[str], max_tokens: int | None = None) -> NDArray[np.float32]:
        """Shape ``(len(texts), dim)``; a text counts at most ``max_tokens`` tokens."""
        ...


class Embedder(Protocol):
    """Turns texts into vectors."""

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Return shape ``(len(texts), d)``, float32, each row L2-normalized."""
        ...


class VectorStore(Protocol):
    """A shared home for vectors by key (e.g. the object store), so replicas and later steps
    reuse them; :class:`CachedEmbedder` reads it before embedding and writes what it made."""

    async def get_many(self, keys: Sequence[str]) -> Mapping[str, NDArray[np.float32]]:
        """The vectors held for some of ``keys`` (absent keys are simply missing)."""
        ...

    async def put_many(self, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        """Keep these vectors; losing some is harmless (they are made again)."""
        ...


def text_key(namespace: str, text: str) -> str:
    """A vector's key: the embedder's name and the text's SHA-256 (no text in the key)."""
    return f"{namespace}:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class VectorCache:
    """A thread-safe LRU of vectors by key; copies are stored, so callers may write theirs."""

    def __init__(self, size: int) -> None:
        """Keep at most ``size`` vectors (0 keeps none)."""
        self.size = size
        self._items: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get_many(self, keys: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        """The cached vectors among ``keys``, each marked most recently used."""
        found: dict[str, NDArray[np.float32]] = {}
        with self._lock:
            for key in keys:
                vector = self._items.get(key)
                if vector is not None:
                    self._items.move_to_end(key)
                    found[key] = vector
        return found

    def put_many(self, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        """Keep ``vectors``, dropping the least recently used beyond the size."""
        if self.size <= 0:
            return
        with self._lock:
            for key, vector in vectors.items():
                self._items[key] = np.array(vector, dtype=np.float32)
                self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every vector."""
        with self._lock:
            self._items.clear()


_caches: dict[str, VectorCache] = {}


def _process_cache(namespace: str) -> VectorCache:
    """The process-wide cache of one embedder's vectors, made on first use."""
    with _model_lock:
        cache = _caches.get(namespace)
        if cache is None:
            cache = _caches[namespace] = VectorCache(EmbedSettings().cache_size)
        return cache


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction taken at once (writers take turns), rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class DiskVectorStore:
    """A :class:`VectorStore` in one SQLite file, bounded to ``size`` vectors (the least
    recently used go first), shared by every process of the machine.

    SQLite's own locking makes concurrent readers and writers safe (WAL journal: readers never
    wait for a writer; writers take turns, waiting up to ``timeout`` seconds). A store that
    cannot be opened or written costs time, never correctness: it reads as empty and writes
    nothing. Vectors must all have ``dim`` float32 components; others read as absent.
    """

    # Keys per statement: under SQLite's smallest default limit of bound parameters (999).
    _CHUNK = 900

    def __init__(self, path: Path, dim: int, size: int, timeout: float = 30.0) -> None:
        """Open (or create) the store at ``path``."""
        self.path = path
        self.dim = dim
        self.size = size
        self.timeout = timeout
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a lost vector is made again
            db.execute(
                "CREATE TABLE IF NOT EXISTS vectors"
                " (key TEXT PRIMARY KEY, vec BLOB NOT NULL, used INTEGER NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS vectors_used ON vectors (used)")
            self._db = db
        return self._db

    def read(self, keys: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        """The stored vectors among ``keys``, each marked as just used."""
        width = 4 * self.dim
        found: dict[str, NDArray[np.float32]] = {}
        try:
            with self._lock:
                db = self._connect()
                for start in range(0, len(keys), self._CHUNK):
                    chunk = list(keys[start : start + self._CHUNK])
                    marks = ",".join("?" * len(chunk))
                    rows = db.execute(
                        f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk
                    ).fetchall()
                    for key, blob in rows:
                        if len(blob) == width:
                            found[key] = np.frombuffer(blob, dtype=np.float32).copy()
                if found:
                    now = time.time_ns()
                    with _immediate(db):
                        db.executemany(
                            "UPDATE vectors SET used = ? WHERE key = ?",
                            ((now, k) for k in found),
                        )
        except (sqlite3.Error, OSError) as exc:
            log.warning("vector_store_unreadable", path=str(self.path), error=str(exc))
        return found

    def write(self, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        """Keep ``vectors``, then drop the least recently used beyond ``size``."""
        if self.size <= 0 or not vectors:
            return
        now = time.time_ns()
        rows = [
            (k, np.ascontiguousarray(v, dtype=np.float32).tobytes(), now)
            for k, v in vectors.items()
            if np.size(v) == self.dim
        ]
        # SQLite answers "database is locked" at once, without waiting its timeout, in a few
        # cases (e.g. a connection switching a new file to WAL while another opens it): such
        # a write is tried again until the timeout, not dropped.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with self._lock:
                    db = self._connect()
                    with _immediate(db):
                        db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
                        (count,) = db.execute("SELECT count(*) FROM vectors").fetchone()
                        if count > self.size:
                            db.execute(
                                "DELETE FROM vectors WHERE key IN"
                                " (SELECT key FROM vectors ORDER BY used LIMIT ?)",
                                (count - self.size,),
                            )
                return
            except (sqlite3.Error, OSError) as exc:
                locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                if locked and time.monotonic() < deadline:
                    time.sleep(0.005 + 0.02 * random.random())
                    continue
                log.warning("vector_store_not_written", path=str(self.path), error=str(exc))
                return

    async def get_many(self, keys: Sequence[str]) -> Mapping[str, NDArray[np.float32]]:
        """:meth:`read` in a worker thread."""
        return await asyncio.to_thread(self.read, keys)

    async def put_many(self, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        """:meth:`write` in a worker thread."""
        await asyncio.to_thread(self.write, dict(vectors))

    def close(self) -> None:
        """Close the connection (opened again on next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


_tag_stores: dict[str, DiskVectorStore] = {}


def tag_store(encoder: str) -> DiskVectorStore | None:
    """The machine's disk store of tag vectors for a local encoder (None: disabled by
    ``TAXOFORGE_EMBED_TAG_STORE_SIZE=0``), one per process and file.

    The file is named by what the vectors depend on: the encoder, the model files' content
    hash and the ONNX graph's version, so a changed model or builder never serves old
    vectors. The static encoder has none: it makes 20k tag vectors in ~0.4 s, where writing
    them to a store took ~0.8 s and reading them back ~0.5 s.
    """
    settings = EmbedSettings()
    if settings.tag_store_size <= 0 or encoder == "static":
        return None
    model_hash = content_hash(installed_model_dir(), ("model.safetensors", "tokenizer.json"))
    dim = 384
    version = f"g{GRAPH_VERSION}" if encoder.startswith("onnx") else f"d{dim}"
    name = f"tag-vectors-{encoder}-{version}-{model_hash[:16]}.sqlite"
    path = model_cache.cache_path(name, settings.cache_dir)
    with _model_lock:
        store = _tag_stores.get(str(path))
        if store is None or store.size != settings.tag_store_size:
            store = _tag_stores[str(path)] = DiskVectorStore(path, dim, settings.tag_store_size)
        return store


def release_local_models(*kinds: str) -> None:
    """Drop this process's shared local encoders (all, or those of ``kinds``: ``onnx`` is every
    ONNX model, ``onnx@1`` only the one bound to a thread) and give their memory back to the
    system.

    For a step that is done with a model it will not need again soon: the ONNX session
    (weights and buffers, ~100-200 MiB) otherwise stays for the process's life. The next
    use loads the model again (from the cached graph: a fraction of a second). Vectors
    already cached stay cached.
    """
    with _model_lock:
        for key in tuple(_models):
            if not kinds or key in kinds or key.partition("@")[0] in kinds:
                del _models[key]
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """Ask glibc to hand freed heap pages back (it keeps them otherwise: measured, ~230 MiB
    of a released ONNX session stayed resident until trimmed)."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim(0)
    except OSError:  # not glibc: nothing to trim
        pass


def make_encoder(encoder: str, threads: int = 0) -> TextEncoder:
    """A new local encoder of the given kind (see :class:`EmbedSettings`); ``threads`` bounds
    an ONNX encoder's threads (0: every core)."""
    if encoder == "numpy":
        return MiniLM()
    if encoder in ("onnx", "onnx-int8"):
        return OnnxMiniLM(
            int8=encoder == "onnx-int8", threads=threads, cache_dir=EmbedSettings().cache_dir
        )
    if encoder == "static":
        settings = EmbedSettings()
        return StaticMiniLM(dims=settings.static_dims, cache_dir=settings.cache_dir)
    raise ValueError(f"unknown local encoder {encoder!r}: use {', '.join(ENCODERS)}")


def make_model_files() -> list[Path]:
    """Make, where taxoforge is installed (:func:`~taxoforge.model_cache.installed_dir`), the
    files the configured local encoders derive from the installed model (ONNX graphs, the
    static table), so that no process pays for them in its first job; files already there are
    kept. Returns the files of the directory after."""
    settings = EmbedSettings()
    target = model_cache.installed_dir()
    kinds = {settings.for_use(use) for use in get_args(Use)}
    for kind in sorted(kinds):
        if kind in ("onnx", "onnx-int8"):
            OnnxMiniLM(int8=kind == "onnx-int8", cache_dir=target)
        elif kind == "static":
            StaticMiniLM(dims=settings.static_dims, cache_dir=target)
    return sorted(p for p in target.iterdir() if p.is_file()) if target.is_dir() else []


def _shared_model(encoder: str | None = None, threads: int = 0) -> TextEncoder:
    """Load the local model once per process, kind and thread bound (thread-safe).

    The bound does not change the vectors beyond the ~1e-5 that a batch's other texts
    already may (``test_minilm``).
    """
    kind = encoder or EmbedSettings().encoder
    key = f"{kind}@{threads}" if threads else kind
    with _model_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = make_encoder(kind, threads) if threads else make_encoder(kind)
        return model


def _lower_priority() -> None:
    """Make the calling thread the machine's last claim on a core (Linux: per thread): the
    idle scheduling class, whose thread any other gets the core from at once on waking, or
    else the lowest nice level."""
    tid = threading.get_native_id()
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))


_background: concurrent.futures.ThreadPoolExecutor | None = None


def _background_executor() -> concurrent.futures.ThreadPoolExecutor:
    """One thread at the lowest priority, for embedding ahead of need (see
    :meth:`LocalMiniLM.in_background`): it takes only a core nothing else wants."""
    global _background
    with _model_lock:
        if _background is None:
            _background = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="embed-background", initializer=_lower_priority
            )
        return _background


class CachedEmbedder:
    """Any embedder with vectors reused by content hash: first the process's LRU, then the
    ``store`` if one is given; only the texts found in neither are embedded (once each)."""

    def __init__(
        self,
        inner: Embedder,
        namespace: str,
        store: VectorStore | None = None,
        cache: VectorCache | None = None,
    ) -> None:
        """``namespace`` names the model (vectors of two models never mix)."""
        self.inner = inner
        self.namespace = namespace
        self.store = store
        self.cache = cache if cache is not None else _process_cache(namespace)

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Vectors of ``texts`` in order, made only for texts not cached."""
        keys = [text_key(self.namespace, t) for t in texts]
        found = self.cache.get_many(keys)
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing and self.store is not None:
            stored = await self.store.get_many(missing)
            stored = {k: np.asarray(v, dtype=np.float32) for k, v in stored.items()}
            self.cache.put_many(stored)
            found.update(stored)
            missing = [k for k in missing if k not in stored]
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            made = await self.inner.embed([texts[first[k]] for k in missing])
            new = dict(zip(missing, made, strict=True))
            self.cache.put_many(new)
            if self.store is not None:
                await self.store.put_many(new)
            found.update(new)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


class LocalMiniLM:
    """all-MiniLM-L6-v2 (384 dimensions), offline; loaded on first use, shared by the process,
    its vectors cached by content hash in the process (see :class:`CachedEmbedder`)."""

    def __init__(
        self,
        encoder: str | None = None,
        store: VectorStore | None = None,
        max_tokens: int | None = None,
    ) -> None:
        """Fail now, with the install command, if the model package is missing.

        ``encoder``: onnx-int8, onnx, numpy or static (default: ``TAXOFORGE_EMBED_ENCODER``).
        ``store``: a shared vector store to read before embedding and fill after.
        ``max_tokens``: each text counts at most this many tokens (None: the model's limit).
        """
        installed_model_dir()
        self.encoder = encoder or EmbedSettings().encoder
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown local encoder {self.encoder!r}: use {', '.join(ENCODERS)}")
        self.max_tokens = max_tokens
        # Known without loading the model, so an empty call costs nothing.
        self.dim = 384
        if self.encoder == "static":
            self.dim = min(384, EmbedSettings().static_dims or 384)
        # The encoder and the truncation are in the namespace: their vectors differ.
        namespace = f"{LOCAL_MODEL}#{self.encoder}"
        if max_tokens:
            namespace += f"@{max_tokens}"
        self._cached = CachedEmbedder(_Encode(self.encoder, max_tokens), namespace, store)

    def in_background(self) -> CachedEmbedder:
        """This embedder for work done ahead of need: the same vectors, cache and store, made
        by one thread at the lowest priority with a model of its own bound to that thread, so
        it uses only a core the process and its neighbours leave idle. Release its model with
        ``release_local_models`` when the work is done (its key: ``<encoder>@1``)."""
        encode = _Encode(self.encoder, self.max_tokens, background=True)
        return CachedEmbedder(encode, self._cached.namespace, self._cached.store, self.cache)

    @property
    def cache(self) -> VectorCache:
        """The process-wide cache this embedder reads and fills."""
        return self._cached.cache

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed the texts not cached, in a worker thread so the event loop keeps running."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await self._cached.embed(texts)


class _Encode:
    """The shared local model as an :class:`Embedder`, run in a worker thread (``background``:
    the low-priority one, with a model bound to one thread)."""

    def __init__(
        self, encoder: str, max_tokens: int | None = None, *, background: bool = False
    ) -> None:
        self.encoder = encoder
        self.max_tokens = max_tokens
        self.background = background

    def _encode(self, batch: list[str]) -> NDArray[np.float32]:
        model = _shared_model(self.encoder, 1) if self.background else _shared_model(self.encoder)
        if self.max_tokens is None:  # the plain call, as any TextEncoder takes it
            return model.encode(batch)
        return model.encode(batch, self.max_tokens)

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        batch = list(texts)
        if self.background:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(_background_executor(), self._encode, batch)
        return await asyncio.to_thread(self._encode, batch)


class LiteLLMEmbedder:
    """A declared litellm embedding model; rows are L2-normalized here whatever it returns."""

    def __init__(self, endpoint: Endpoint, batch_size: int = 256) -> None:
        """``batch_size`` texts go in one request (providers cap a request's inputs)."""
        self.endpoint = endpoint
        self.batch_size = batch_size

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Call ``litellm.aembedding`` per batch; an empty input makes no call, shape (0, 0)."""
        from taxoforge.llm.litellm_transport import _litellm, litellm_fault

        lib = _litellm()
        endpoint = self.endpoint
        rows: list[NDArray[np.float32]] = []
        for start in range(0, len(texts), self.batch_size):
            kwargs: dict[str, Any] = {
                "model": endpoint.model,
                "input": list(texts[start : start + self.batch_size]),
            }
            if endpoint.api_base:
                kwargs["api_base"] = endpoint.api_base
            key = endpoint.key()
            if key:
                kwargs["api_key"] = key
            try:
                resp = await lib.aembedding(**kwargs)
            except Exception as exc:  # the provider's reply is for the log, not the job
                fault = litellm_fault(lib, exc)
                log.warning(
                    "embedding_fault",
                    model=endpoint.name,
                    error=str(fault),
                    server_said=fault.detail[:500],
                )
                error = TransientError if fault.transient else PermanentError
                raise error(f"embedding model {endpoint.name}: {fault}") from exc
            items = sorted(resp.data, key=lambda item: int(item["index"]))
            rows.append(np.asarray([item["embedding"] for item in items], dtype=np.float32))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.concatenate(rows)
        if vectors.shape[0] != len(texts):
            raise ValueError(
                f"{endpoint.name} returned {vectors.shape[0]} vectors for {len(texts)}"
            )
        return _normalize(vectors)


def _normalize(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: NDArray[np.float32] = (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
    return out


def embedder_for(
    name: str,
    registry: ModelRegistry,
    store: VectorStore | None = None,
    *,
    use: Use | None = None,
    max_tokens: int | None = None,
) -> Embedder:
    """The embedder a request names: ``""`` or ``local/all-minilm-l6-v2`` is the local one, any
    other must be declared for the embedder role in this process's registry.

    ``store``: a shared vector store (e.g. the job's object store) read before embedding and
    filled after; with one, a declared model's vectors are cached too (the local model's
    always are, in the process). ``use``: which of the selector's uses the local model serves
    (its encoder is :meth:`EmbedSettings.for_use`); for ``tags`` with no ``store``, the local
    model's vectors are also kept on the machine's disk (:func:`tag_store`) for later jobs.
    ``max_tokens``: the local model's truncation (a declared model gets whole texts).

    Raises:
        PermanentError: no such embedding model here (the message lists those there are).
    """
    settings = EmbedSettings()
    encoder = settings.for_use(use) if use else None
    local = name.lower() in ("", LOCAL_MODEL)
    if not local:
        try:
            endpoint = registry.get(name, "embedder")
        except ModelChoiceError as exc:
            raise PermanentError(f"embedder: {exc}") from exc
        local = endpoint.is_local
    if local:
        if store is None and use == "tags" and not max_tokens:
            # Tags repeat across jobs: the machine keeps their vectors (one file per encoder).
            store = tag_store(encoder or settings.encoder)
        return LocalMiniLM(encoder, store=store, max_tokens=max_tokens)
    if store is not None:
        # Keyed by the model and address, not the operator's name for them, which may move.
        namespace = f"{endpoint.model}@{endpoint.api_base or ''}"
        return CachedEmbedder(LiteLLMEmbedder(endpoint), namespace, store)
    return LiteLLMEmbedder(endpoint)


def cosine_matrix(
    a: NDArray[np.floating[Any]], b: NDArray[np.floating[Any]]
) -> NDArray[np.float32]:
    """Cosine similarity of every row of ``a`` (n, d) with every row of ``b`` (m, d): (n, m)."""
    a32 = _normalize(np.asarray(a, dtype=np.float32))
    b32 = _normalize(np.asarray(b, dtype=np.float32))
    out: NDArray[np.float32] = a32 @ b32.T
    return out
