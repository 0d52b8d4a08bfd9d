"""How well tag normalization finds the concepts behind a real-shaped corpus's tags, and what
it costs, with and without the spelling step, per local encoder.

``realistic_corpus.py`` draws each row's tags from a few thousand concepts and spells each the
ways an LLM tagger does (case, plurals, joined words, typos, word order, qualifiers such as
"advanced x"), so every raw tag's concept is known. Each configuration runs
``taxoforge.labels.normalize_labels`` over every tag occurrence (min frequency 2, threshold
0.85, the selector's defaults) and prints: the canonical forms the encoder embedded, the
seconds it took (embedding included), the labels kept and the concepts they stand for, and
per tag occurrence whether its label's majority concept is its own (right), another (wrong),
or the label was dropped as rare. The corpus's near-synonyms share words; real tags' often do
not, so each encoder is also given 20 near-synonym pairs of real tags and 20 related but
distinct pairs, written here by hand, and the pairs each would merge at 0.85 are counted.

Run: ``.venv/bin/python benchmarks/tag_quality_bench.py`` (``--items 20000`` for a quicker run,
``--encoders static`` to leave out the ONNX model).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import realistic_corpus
from numpy.typing import NDArray
from select_bench import _row, english_words

from taxoforge.embeddings import make_encoder
from taxoforge.labels import Normalized, canonical, normalize_labels

THRESHOLD = 0.85  # the selector's default tag_merge_threshold


class _Counting:
    """An embedder over a local encoder that counts what it embedded."""

    def __init__(self, encoder: str) -> None:
        self.encoder = make_encoder(encoder)
        self.texts = 0

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.texts += len(texts)
        return await asyncio.to_thread(self.encoder.encode, list(texts))


def corpus_tags(items: int, seed: int) -> tuple[list[str], dict[str, str]]:
    """Every tag occurrence of the corpus, and each raw tag's concept."""
    concept_of: dict[str, str] = {}
    variant = realistic_corpus._variant

    def recorded(concept: str, rng: Any) -> str:
        spelled = variant(concept, rng)
        concept_of.setdefault(spelled, concept)
        return spelled

    realistic_corpus._variant = recorded  # type: ignore[assignment]
    occurrences: list[str] = []
    try:
        for row in realistic_corpus.generated_rows(items, seed, english_words(), _row):
            query = next(m["content"] for m in row["messages"] if m["role"] == "user")
            at = query.rfind("[tags: ")
            if at >= 0:
                occurrences += query[at + 7 :].rstrip("]").split(", ")
    finally:
        realistic_corpus._variant = variant  # type: ignore[assignment]
    return occurrences, concept_of


def score(out: Normalized, occurrences: list[str], concept_of: dict[str, str]) -> str:
    """Right / wrong / dropped shares of the occurrences, and labels against concepts."""
    members: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for raw in occurrences:
        label = out.mapping.get(raw)
        if label is not None:
            members[label][concept_of[raw]] += 1
    majority = {label: c.most_common(1)[0][0] for label, c in members.items()}
    right = wrong = dropped = 0
    for raw in occurrences:
        label = out.mapping.get(raw)
        if label is None:
            dropped += 1
        elif majority[label] == concept_of[raw]:
            right += 1
        else:
            wrong += 1
    n = len(occurrences)
    return (
        f"{len(majority):>7,} {len(set(majority.values())):>9,} "
        f"{right / n:>7.1%} {wrong / n:>6.1%} {dropped / n:>8.1%}"
    )


# Near-synonyms as taggers write them, and related labels that are not the same thing.
SYNONYMS = [
    ("machine learning", "ml"),
    ("mathematics", "math"),
    ("programming", "coding"),
    ("javascript", "js"),
    ("data analysis", "data analytics"),
    ("text summarization", "summarization"),
    ("translation", "language translation"),
    ("creative writing", "creative storytelling"),
    ("python programming", "python coding"),
    ("problem solving", "problem-solving skill"),
    ("information retrieval", "information seeking"),
    ("code generation", "code writing"),
    ("mathematical calculation", "math computation"),
    ("recipe", "cooking recipe"),
    ("grammar correction", "grammar check"),
    ("sql query", "database query"),
    ("email writing", "write email"),
    ("historical knowledge", "history knowledge"),
    ("physics", "physics knowledge"),
    ("question answering", "answer question"),
]
DISTINCT = [
    ("python", "java"),
    ("addition", "subtraction"),
    ("poetry", "prose"),
    ("biology", "chemistry"),
    ("french", "german"),
    ("sql query", "python script"),
    ("email writing", "essay writing"),
    ("history", "geography"),
    ("sorting algorithm", "search algorithm"),
    ("marketing", "sales"),
    ("cooking", "baking"),
    ("data analysis", "data visualization"),
    ("unit conversion", "currency conversion"),
    ("debugging", "testing"),
    ("summarization", "paraphrasing"),
    ("translation", "transliteration"),
    ("linear algebra", "calculus"),
    ("sentiment analysis", "emotion recognition"),
    ("travel planning", "trip itinerary"),
    ("legal advice", "medical advice"),
]


def pair_similarities(encoder: str, pairs: list[tuple[str, str]]) -> NDArray[np.float32]:
    model = make_encoder(encoder)
    first = model.encode([a for a, _ in pairs])
    second = model.encode([b for _, b in pairs])
    out: NDArray[np.float32] = (first * second).sum(axis=1)
    return out


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--encoders", default="static,onnx")
    args = parser.parse_args(argv)
    encoders = [e for e in args.encoders.split(",") if e]
    started = time.perf_counter()
    occurrences, concept_of = corpus_tags(args.items, args.seed)
    forms = {canonical(t) for t in set(occurrences)} - {""}
    print(
        f"realistic corpus, {args.items:,} rows (seed {args.seed}, made in "
        f"{time.perf_counter() - started:.1f} s): {len(occurrences):,} tag occurrences, "
        f"{len(set(occurrences)):,} distinct raw tags, {len(forms):,} canonical forms, "
        f"{len(set(concept_of.values())):,} concepts"
    )
    print(
        f"{'configuration':<26} {'embedded':>9} {'seconds':>8} {'labels':>7} {'concepts':>9} "
        f"{'right':>7} {'wrong':>6} {'dropped':>8}"
    )
    configurations: list[tuple[str, str | None, bool]] = [
        ("canonical forms only", None, False),
        ("spelling", None, True),
    ]
    for encoder in encoders:
        configurations += [(encoder, encoder, False), (f"spelling + {encoder}", encoder, True)]
    for name, encoder, spelling in configurations:
        embedder = _Counting(encoder) if encoder else None
        started = time.perf_counter()
        out = await normalize_labels(occurrences, embedder, spelling=spelling)
        seconds = time.perf_counter() - started
        embedded = embedder.texts if embedder else 0
        print(f"{name:<26} {embedded:>9,} {seconds:>8.1f} {score(out, occurrences, concept_of)}")
    print(f"\nhand-written pairs merged at {THRESHOLD} (cosine of the closest distinct pair)")
    for encoder in encoders:
        same = pair_similarities(encoder, SYNONYMS)
        other = pair_similarities(encoder, DISTINCT)
        print(
            f"  {encoder:<10} near-synonyms {int((same >= THRESHOLD).sum())}/{len(SYNONYMS)}, "
            f"distinct {int((other >= THRESHOLD).sum())}/{len(DISTINCT)} ({other.max():.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
