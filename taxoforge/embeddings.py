"""Text embeddings for the ``embedder`` role.

The default, ``local/all-minilm-l6-v2``, runs all-MiniLM-L6-v2 offline in numpy
(:mod:`taxoforge.minilm`): no PyTorch, nothing downloaded. Any other is a model the operator
declared for the embedder role (:mod:`taxoforge.llm.endpoints`), called through litellm with
its own address and key; a request only ever names it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import structlog
from numpy.typing import NDArray

from taxoforge.errors import PermanentError, TransientError
from taxoforge.llm.endpoints import Endpoint, ModelChoiceError, ModelRegistry
from taxoforge.minilm import MiniLM, installed_model_dir

__all__ = [
    "LOCAL_MODEL",
    "Embedder",
    "LiteLLMEmbedder",
    "LocalMiniLM",
    "cosine_matrix",
    "embedder_for",
]

log = structlog.get_logger(__name__)

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


def embedder_for(name: str, registry: ModelRegistry) -> Embedder:
    """The embedder a request names: ``""`` or ``local/all-minilm-l6-v2`` is the local one, any
    other must be declared for the embedder role in this process's registry.

    Raises:
        PermanentError: no such embedding model here (the message lists those there are).
    """
    if name.lower() in ("", LOCAL_MODEL):
        return LocalMiniLM()
    try:
        endpoint = registry.get(name, "embedder")
    except ModelChoiceError as exc:
        raise PermanentError(f"embedder: {exc}") from exc
    if endpoint.is_local:
        return LocalMiniLM()
    return LiteLLMEmbedder(endpoint)


def cosine_matrix(
    a: NDArray[np.floating[Any]], b: NDArray[np.floating[Any]]
) -> NDArray[np.float32]:
    """Cosine similarity of every row of ``a`` (n, d) with every row of ``b`` (m, d): (n, m)."""
    a32 = _normalize(np.asarray(a, dtype=np.float32))
    b32 = _normalize(np.asarray(b, dtype=np.float32))
    out: NDArray[np.float32] = a32 @ b32.T
    return out
