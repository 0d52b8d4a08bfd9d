"""Counting tokens offline: o200k_base (the GPT-4o tokenizer) from the files litellm ships.

Token budgets are counted with one fixed tokenizer, so a budget means the same on every
machine; tiktoken would download its files on first use, so it is pointed at litellm's copy.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tiktoken

__all__ = [
    "ENCODING",
    "count_tokens",
    "count_tokens_batch",
    "messages_tokens",
    "messages_tokens_batch",
]

ENCODING = "o200k_base"


def _bundled_cache() -> str:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("litellm is not installed: its tokenizer files count tokens offline")
    root = Path(next(iter(spec.submodule_search_locations)))
    return str(root / "litellm_core_utils" / "tokenizers")


@functools.cache
def _encoding() -> tiktoken.Encoding:
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", _bundled_cache())
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """Tokens in ``text`` (special-token text counts as ordinary text)."""
    if not text:
        return 0
    return len(_encoding().encode_ordinary(text))


def messages_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Tokens of a conversation's contents, plus 4 per message for its role and separators."""
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)


# Threads a batch is counted on by default: one. tiktoken's encoder runs outside the GIL, but
# its own batch call on two threads took 3.1 s (5.0 CPU-s) for 25k realistic conversations
# where one thread took 2.3 s; two threads each counting half the texts in turn took 1.4 s
# where one took 1.8 s: worth it only with a core to spare.
_BATCH_THREADS = 1


def count_tokens_batch(texts: Sequence[str], threads: int = _BATCH_THREADS) -> list[int]:
    """``count_tokens`` of each text; with ``threads`` above 1, the texts split in that many
    runs, each counted in turn on its own thread (tiktoken's encoder leaves the GIL while it
    runs)."""
    if not texts:
        return []
    if threads <= 1 or len(texts) < 2 * threads:
        return _count_run(texts)
    _encoding()  # loaded once, here, not by each thread at once
    size = -(-len(texts) // threads)
    runs = [texts[start : start + size] for start in range(0, len(texts), size)]
    with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="tokens") as pool:
        return [count for counts in pool.map(_count_run, runs) for count in counts]


def _count_run(texts: Sequence[str]) -> list[int]:
    encode = _encoding().encode_ordinary
    return [len(encode(text)) if text else 0 for text in texts]


def messages_tokens_batch(
    conversations: Sequence[Sequence[Mapping[str, Any]]], threads: int = _BATCH_THREADS
) -> list[int]:
    """``messages_tokens`` of each conversation, its texts encoded as one batch."""
    texts = [str(m.get("content") or "") for messages in conversations for m in messages]
    counts = iter(count_tokens_batch(texts, threads))
    return [sum(next(counts) + 4 for _ in messages) for messages in conversations]
