"""A static (model2vec-style) encoder distilled from the installed all-MiniLM-L6-v2.

Every WordPiece token of the model's vocabulary is run alone through the ONNX encoder once
(``[CLS] token [SEP]``, mean-pooled), the table is PCA-reduced and each row weighted by a
Zipf/SIF prior on the token's rank; a text's vector is then the L2-normalized sum of its
tokens' rows (no special tokens). No transformer runs per text: encoding is tokenizing plus a
sparse matrix product, tens of times faster than MiniLM at a lower fidelity (see
``benchmarks/embed_bench.py`` for both figures).

The table depends only on the model files and the distillation's parameters, so it is computed
once and kept on disk under the cache directory, named by their content hash, written
atomically (:mod:`taxoforge.model_cache`, shared with the ONNX encoder's graph). Nothing is
downloaded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog
from numpy.typing import NDArray
from scipy import sparse
from tokenizers import Tokenizer

from taxoforge.minilm import installed_model_dir
from taxoforge.model_cache import (
    cache_path,
    content_hash,
    default_cache_dir,
    locate,
    write_atomically,
)

__all__ = ["StaticMiniLM", "default_cache_dir", "distill_table"]

log = structlog.get_logger(__name__)

F32 = NDArray[np.float32]

# Bumped whenever the distillation changes, so a table made by older code is not reused.
_VERSION = 1
# Files whose bytes the table depends on.
_MODEL_FILES = ("model.safetensors", "tokenizer.json", "config.json")
# Vocabulary rows per ONNX run while distilling (3 tokens each: small and fast).
_DISTIL_BATCH = 2048
# Tokens kept per text: a static vector gains little from more, and tokenizing costs.
MAX_TOKENS = 512


def distill_table(model_dir: Path, dims: int, sif: float, cache_dir: Path | None = None) -> F32:
    """The weighted token table: (vocabulary, dims) float32.

    ``dims`` 0 (or >= the model's width) keeps every dimension; ``sif`` is the SIF coefficient
    ``a`` of the weight ``a / (a + p(rank))`` with ``p`` a Zipf law over token ids (WordPiece
    vocabularies list common pieces first). The ONNX encoder it runs keeps its graph under
    ``cache_dir`` (as :class:`~taxoforge.minilm.OnnxMiniLM`).
    """
    from taxoforge.minilm import OnnxMiniLM

    encoder = OnnxMiniLM(model_dir, int8=False, cache_dir=cache_dir)
    cls_id = encoder.tokenizer.token_to_id("[CLS]")
    sep_id = encoder.tokenizer.token_to_id("[SEP]")
    vocab = encoder.tokenizer.get_vocab_size(with_added_tokens=True)
    rows = np.zeros((vocab, encoder.dim), dtype=np.float32)
    for start in range(0, vocab, _DISTIL_BATCH):
        ids = np.arange(start, min(vocab, start + _DISTIL_BATCH), dtype=np.int64)
        batch = np.stack([np.full_like(ids, cls_id), ids, np.full_like(ids, sep_id)], axis=1)
        (pooled,) = encoder._session.run(
            None,
            {
                "input_ids": batch,
                "token_type_ids": np.zeros_like(batch),
                "attention_mask": np.ones(batch.shape, dtype=np.float32),
            },
        )
        rows[start : start + len(ids)] = pooled
    if 0 < dims < rows.shape[1]:
        centered = rows - rows.mean(axis=0, keepdims=True)
        # The covariance's eigenvectors (384 x 384) give the principal axes cheaply.
        _, vecs = np.linalg.eigh((centered.T @ centered).astype(np.float64))
        axes = vecs[:, ::-1][:, :dims].astype(np.float32)
        rows = centered @ axes
    inv_rank = 1.0 / np.arange(2, vocab + 2, dtype=np.float64)
    proba = inv_rank / inv_rank.sum()
    weight = (sif / (sif + proba)).astype(np.float32)
    table: F32 = np.ascontiguousarray(rows * weight[:, None], dtype=np.float32)
    return table


class StaticMiniLM:
    """Text vectors from the distilled token table (see the module); rows L2-normalized, a text
    with no tokens gives a zero row."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        dims: int = 256,
        sif: float = 1e-4,
        cache_dir: Path | None = None,
    ) -> None:
        """Load the table from ``cache_dir`` (default :func:`default_cache_dir`) or from the
        files made at install (:func:`~taxoforge.model_cache.locate`), computing and storing it
        under ``cache_dir`` first if neither holds it."""
        model_dir = model_dir or installed_model_dir()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        key = content_hash(model_dir, _MODEL_FILES)[:32]
        name = f"static-minilm-v{_VERSION}-{key}-{dims}d-sif{sif:g}.npy"
        self.path = locate(name, cache_dir)
        self._cache_dir = cache_dir
        self.table = self._load_or_make(model_dir, dims, sif)
        self.dim = int(self.table.shape[1])

    def _load_or_make(self, model_dir: Path, dims: int, sif: float) -> F32:
        try:
            table: F32 = np.load(self.path, allow_pickle=False)
            return table
        except (OSError, ValueError):
            pass  # missing or unreadable: made again below
        start = time.perf_counter()
        table = distill_table(model_dir, dims, sif, cache_dir=self._cache_dir)
        elapsed = time.perf_counter() - start
        self.path = cache_path(self.path.name, self._cache_dir)  # made here: kept in the cache
        write_atomically(self.path, lambda fh: np.save(fh, table, allow_pickle=False))
        log.info("static_table_made", path=str(self.path), seconds=round(elapsed, 2))
        return table

    def encode(self, texts: Sequence[str], max_tokens: int | None = None) -> F32:
        """Embed ``texts``: shape ``(len(texts), dim)``, float32, rows L2-normalized.

        A text counts its first ``max_tokens`` tokens (default :data:`MAX_TOKENS`).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        limit = max_tokens or MAX_TOKENS
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        ids = [e.ids[:limit] for e in encodings]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.fromiter(
            (t for row in ids for t in row), dtype=np.int64, count=int(indptr[-1])
        )
        counts = sparse.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr),
            shape=(len(ids), self.table.shape[0]),
        )
        out = np.asarray(counts @ self.table, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalized: F32 = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return normalized
