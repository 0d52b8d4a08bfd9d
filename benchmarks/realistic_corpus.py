"""A real-shaped instruction corpus for ``select_bench.py --corpus realistic``.

What real instruction data has and the synthetic corpus lacks: instructions of 10-60 words and
answers of 50-400 words; open tags as an LLM tagger writes them, with a long tail (a few
thousand concepts drawn Zipf-like, most rows also carrying a rare one) and spelled many ways
(case, plurals, hyphen / underscore / space, typos, word order, near-synonyms such as
"advanced x" or "x techniques"), so 100k rows carry tens of thousands of distinct raw tags;
near-duplicate records at a few percent (the same answer; the instruction exact up to case and
punctuation for half, one word added for the other half). The FAKE tagger repeats a query's
"[tags: ...]" marker, so the selector sees exactly these raw tags. Everything is drawn from
one seeded generator: the same seed writes the same file.
"""

from __future__ import annotations

import itertools
import json
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RealisticCorpus", "generate", "generated_rows"]

OPENERS = (
    "How do I",
    "Why does",
    "Can you explain",
    "What is the best way to",
    "Please help me",
    "Write a",
    "Summarize",
    "Give me an example of",
    "Compare",
    "I need to",
)
_SYNONYM_PREFIX = ("advanced", "basic", "intro to", "applied", "modern")
_SYNONYM_SUFFIX = ("techniques", "basics", "concepts", "skills", "tips", "fundamentals")


@dataclass
class RealisticCorpus:
    """What the generated file holds."""

    rows: int = 0
    topics: int = 0
    concepts: int = 0
    distinct_raw_tags: int = 0
    tag_occurrences: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    contaminated: int = 0
    malformed: int = 0
    benchmark_prompts: list[str] = field(default_factory=list)


class _Zipf:
    """Draws from ``items`` with weight 1 / (rank + offset) ** exponent."""

    def __init__(self, items: list[Any], exponent: float, offset: float = 1.0) -> None:
        self.items = items
        self.cum = list(
            itertools.accumulate(1.0 / (r + offset) ** exponent for r in range(len(items)))
        )

    def draw(self, rng: random.Random, n: int = 1) -> list[Any]:
        return rng.choices(self.items, cum_weights=self.cum, k=n)


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word + word[-1]
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:  # swapped letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # a dropped letter
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # a doubled letter


def _variant(concept: str, rng: random.Random) -> str:
    """The concept as a tagger may spell it: usually as is, else one of the usual drifts."""
    r = rng.random()
    words = concept.split()
    if r < 0.50:
        return concept
    if r < 0.60:
        return concept.title() if rng.random() < 0.7 else concept.upper()
    if r < 0.68:
        return concept + "s"
    if r < 0.76 and len(words) > 1:
        return rng.choice(("-", "_", "")).join(words)
    if r < 0.86:
        i = rng.randrange(len(words))
        words[i] = _typo(words[i], rng)
        return " ".join(words)
    if r < 0.92 and len(words) > 1:
        return " ".join(reversed(words))
    if rng.random() < 0.5:
        return f"{rng.choice(_SYNONYM_PREFIX)} {concept}"
    return f"{concept} {rng.choice(_SYNONYM_SUFFIX)}"


def sentences(words: list[str], rng: random.Random) -> str:
    """Words as sentences of 6-16 words: capitalized, ending with a period."""
    out: list[str] = []
    i = 0
    while i < len(words):
        part = words[i : i + rng.randint(6, 16)]
        out.append(part[0].capitalize() + " " + " ".join(part[1:]) + ".")
        i += len(part)
    return " ".join(out)


def plant(
    rng: random.Random, rare: list[str], items: int, duplicate_rate: float
) -> tuple[list[str], dict[int, str]]:
    """The benchmark (100 prompts of 12-24 words from ``rare``, words no other row uses, so a
    row shares a 10-gram with a prompt only where one was planted) and which rows are planted
    as what: exact and near duplicates at ``duplicate_rate`` each, contaminated, malformed."""
    prompts = [sentences(rng.sample(rare, rng.randint(12, 24)), rng) for _ in range(100)]
    n_dup = round(items * duplicate_rate)
    n_near = round(items * duplicate_rate)
    n_contaminated = max(3, round(items * 0.003))
    n_malformed = max(2, round(items * 0.0005))
    kinds = (
        ["dup"] * n_dup
        + ["near"] * n_near
        + ["contaminated"] * n_contaminated
        + ["malformed"] * n_malformed
    )
    special = dict(zip(rng.sample(range(items // 10, items), len(kinds)), kinds, strict=True))
    return prompts, special


def _length(rng: random.Random, low: int, high: int, mode: int) -> int:
    return round(rng.triangular(low, high, mode))


def generate(
    path: Path,
    items: int,
    seed: int,
    vocabulary: list[str],
    row: Callable[[str, str, str | None], dict[str, Any]],
) -> RealisticCorpus:
    """Write ``items`` JSON Lines rows to ``path`` (``row(query, answer, system)`` shapes
    each) from ``vocabulary`` (whole words, most frequent first)."""
    rng = random.Random(seed)
    common = vocabulary[:15000]
    words = _Zipf(common, 1.0, 10.0)
    # Concepts: 1-3 words from the mid-frequency vocabulary (the head is stop words).
    pool = vocabulary[300:12000]
    concepts = sorted({" ".join(rng.sample(pool, rng.choice((1, 2, 2, 3)))) for _ in range(6000)})
    rng.shuffle(concepts)
    tail = _Zipf(concepts, 1.05, 2.0)
    # Topics: each has a few head concepts and its own frequent words; sizes are Zipf-like.
    n_topics = 300
    topics = [
        (rng.sample(concepts[:1500], rng.randint(3, 6)), rng.sample(common, 40))
        for _ in range(n_topics)
    ]
    topic_of = _Zipf(list(range(n_topics)), 0.8, 3.0)
    out = RealisticCorpus(topics=n_topics, concepts=len(concepts))
    out.benchmark_prompts, special = plant(rng, vocabulary[15000:], items, 0.015)
    # Earlier clean rows' query body, tags and answer: dedup compares whole records, so a
    # duplicate repeats the answer too (as scraped and merged datasets do).
    sources: list[tuple[str, str, str]] = []
    raw_tags: set[str] = set()

    def body(topic_words: list[str], n: int) -> list[str]:
        drawn = words.draw(rng, n)
        for i in range(0, n, 3):
            drawn[i] = rng.choice(topic_words)
        return drawn

    with path.open("w", encoding="utf-8") as fh:
        for index in range(items):
            kind = special.get(index, "clean")
            head, topic_words = topics[topic_of.draw(rng)[0]]
            chosen = rng.sample(head, min(len(head), rng.choice((1, 2, 2, 3))))
            if rng.random() < 0.8:
                chosen += tail.draw(rng)
            tags = ", ".join(dict.fromkeys(_variant(c, rng) for c in chosen))
            answer_words = body(topic_words, _length(rng, 50, 400, 150))
            answer = f"{sentences(answer_words, rng)} [quality: {rng.randint(5, 98)}]"
            system = "You are a helpful assistant." if rng.random() < 0.1 else None
            if kind == "malformed":
                out.malformed += 1
                fh.write('{"messages": [{"role": "user", "content": "unterminated\n')
                continue
            if kind == "dup" and sources:
                text, tags, answer = rng.choice(sources)
                query = f"{text.upper()}!! [tags: {tags}]"
                out.exact_duplicates += 1
            elif kind == "near" and sources:
                text, tags, answer = rng.choice(sources)
                query = f"{text} please [tags: {tags}]"
                out.near_duplicates += 1
            elif kind == "contaminated":
                prompt = rng.choice(out.benchmark_prompts)
                before = " ".join(body(topic_words, rng.randint(15, 25)))
                after = " ".join(body(topic_words, rng.randint(15, 25)))
                query = f"{before}: {prompt} {after}? [tags: {tags}]"
                out.contaminated += 1
            else:
                opener = rng.choice(OPENERS)
                n = _length(rng, 10, 60, 24) - len(opener.split())
                text = f"{opener} {' '.join(body(topic_words, max(n, 5)))}?"
                query = f"{text} [tags: {tags}]"
                if n >= 24:  # long enough that one extra word stays above the 0.8 threshold
                    sources.append((text, tags, answer))
            for tag in tags.split(", "):
                raw_tags.add(tag)
                out.tag_occurrences += 1
            fh.write(json.dumps(row(query, answer, system)) + "\n")
    out.rows = items
    out.distinct_raw_tags = len(raw_tags)
    return out


def generated_rows(
    items: int,
    seed: int,
    vocabulary: list[str],
    row: Callable[[str, str, str | None], dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """The rows :func:`generate` writes, parsed, the planted malformed ones left out: for a
    bench that needs the corpus's texts rather than its file (written to a temporary one)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        generate(path, items, seed, vocabulary, row)
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
