"""Counting tokens offline, one text at a time and in batches."""

from __future__ import annotations

from typing import Any

from taxoforge.tokens import (
    count_tokens,
    count_tokens_batch,
    messages_tokens,
    messages_tokens_batch,
)


def test_a_batch_counts_each_text_as_one_call_does() -> None:
    texts = ["", "Hello, world!", "naïve café " * 40, "<|endoftext|> is text here", "🙂 x"]
    assert count_tokens_batch(texts) == [count_tokens(t) for t in texts]
    assert count_tokens_batch(texts, threads=1) == [count_tokens(t) for t in texts]
    # on threads, in order, however the texts split into runs
    many = [f"text number {i} " * (i % 7) for i in range(101)]
    for threads in (2, 3, 4):
        assert count_tokens_batch(many, threads=threads) == [count_tokens(t) for t in many]
    assert count_tokens_batch([]) == []


def test_a_batch_of_conversations_counts_each_as_messages_tokens_does() -> None:
    conversations: list[list[dict[str, Any]]] = [
        [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
        [],
        [{"role": "system", "content": None}, {"role": "user", "content": "Hi " * 50}],
    ]
    assert messages_tokens_batch(conversations) == [messages_tokens(c) for c in conversations]
