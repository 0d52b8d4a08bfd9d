"""Parameters of the published methods that more than one service needs, and seeded sampling."""

from __future__ import annotations

import hashlib

__all__ = ["MAX_SELF_RUBRICS_ROUNDS", "sampling_seed"]

# CodecLM: Self-Rubrics applies at most this many rounds to an instruction; contrastive
# filtering sends an instruction back only while rounds are left.
MAX_SELF_RUBRICS_ROUNDS = 4


def sampling_seed(*parts: str | int) -> int:
    """A deterministic per-call seed: reruns of a recipe sample the same, candidates differ."""
    blob = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big")
