"""Row vectors as clustering and DEITA use them: L2-normalized float32, dense or sparse CSR."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

__all__ = ["CHUNK", "normalize_rows", "row_norms"]

# Rows per block when comparing items with centroids: bounds the (rows x k) scratch matrix.
CHUNK = 16384


def normalize_rows(matrix: Any) -> Any:
    """L2-normalize rows (float32); zero rows stay zero."""
    if sparse.issparse(matrix):
        csr = sparse.csr_matrix(matrix, dtype=np.float32)
        norms = np.sqrt(np.asarray(csr.multiply(csr).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sparse.csr_matrix(sparse.diags(scale.astype(np.float32)) @ csr)
    dense = np.asarray(matrix, dtype=np.float32)
    if dense.ndim != 2:
        raise ValueError(f"vectors must be a 2-d array, got shape {dense.shape}")
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    out: NDArray[np.float32] = np.divide(
        dense, norms, out=np.zeros_like(dense), where=norms > 0
    ).astype(np.float32)
    return out


def row_norms(matrix: Any) -> NDArray[np.float64]:
    """Each row's L2 norm (float64)."""
    if sparse.issparse(matrix):
        sq = np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()
    else:
        sq = np.einsum("ij,ij->i", matrix, matrix)
    out: NDArray[np.float64] = np.sqrt(sq.astype(np.float64))
    return out
