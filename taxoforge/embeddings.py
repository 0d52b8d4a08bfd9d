"""Text embeddings for the ``embedder`` role.

The default, ``local/all-minilm-l6-v2``, runs all-MiniLM-L6-v2 offline in numpy
(:mod:`taxoforge.minilm`): no PyTorch, nothing downloaded. Any other model string is a litellm
embedding model (``openai/text-embedding-3-small``, ``ollama/nomic-embed-text``, ...).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from taxoforge.minilm import MiniLM, installed_model_dir

__all__ = [
    "LOCAL_MODEL",
    "Embedder",
    "LiteLLMEmbedder",
    "LocalMiniLM",
    "cosine_matrix",
    "embedder_for",
]

LOCAL_MODEL = "local/all-minilm-l6-v2"

_model: MiniLM | None = None
_model_lock = threading.Lock()


class Embedder(Protocol):
    """Turns texts into vectors."""

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Return shape ``(len(texts), d)``, float32, each row L2-normalized."""
        ...


def _shared_model() -> MiniLM:
    """Load the local model once per process (thread-safe)."""
    global _model
    with _model_lock:
        if _model is None:
            _model = MiniLM()
        return _model


class LocalMiniLM:
    """all-MiniLM-L6-v2 (384 dimensions) in numpy; loaded on first use, shared by the process."""

    def __init__(self) -> None:
        """Fail now, with the install command, if the model package is missing."""
        installed_model_dir()

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed in a worker thread so the event loop keeps running."""
        batch = list(texts)
        return await asyncio.to_thread(lambda: _shared_model().encode(batch))


class LiteLLMEmbedder:
    """Any litellm embedding model; rows are L2-normalized here whatever the provider returns."""

    def __init__(
        self, model: str, api_base: str = "", api_key: str | None = None, batch_size: int = 256
    ) -> None:
        """``batch_size`` texts go in one request (providers cap a request's inputs)."""
        self.model = model
        self.api_base = api_base
        self.api_key = api_key
        self.batch_size = batch_size

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Call ``litellm.aembedding`` per batch; an empty input makes no call, shape (0, 0)."""
        from taxoforge.llm.litellm_transport import _litellm

        lib = _litellm()
        rows: list[NDArray[np.float32]] = []
        for start in range(0, len(texts), self.batch_size):
            kwargs: dict[str, Any] = {
                "model": self.model,
                "input": list(texts[start : start + self.batch_size]),
            }
            if self.api_base:
                kwargs["api_base"] = self.api_base
            if self.api_key:
                kwargs["api_key"] = self.api_key
            resp = await lib.aembedding(**kwargs)
            items = sorted(resp.data, key=lambda item: int(item["index"]))
            rows.append(np.asarray([item["embedding"] for item in items], dtype=np.float32))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.concatenate(rows)
        if vectors.shape[0] != len(texts):
            raise ValueError(f"{self.model} returned {vectors.shape[0]} vectors for {len(texts)}")
        return _normalize(vectors)


def _normalize(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: NDArray[np.float32] = (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
    return out


def embedder_for(model: str, api_base: str = "", api_key: str | None = None) -> Embedder:
    """The embedder for a role's model string: ``""`` or ``local/all-minilm-l6-v2`` is local."""
    if model.lower() in ("", LOCAL_MODEL):
        return LocalMiniLM()
    return LiteLLMEmbedder(model, api_base=api_base, api_key=api_key)


def cosine_matrix(
    a: NDArray[np.floating[Any]], b: NDArray[np.floating[Any]]
) -> NDArray[np.float32]:
    """Cosine similarity of every row of ``a`` (n, d) with every row of ``b`` (m, d): (n, m)."""
    a32 = _normalize(np.asarray(a, dtype=np.float32))
    b32 = _normalize(np.asarray(b, dtype=np.float32))
    out: NDArray[np.float32] = a32 @ b32.T
    return out
