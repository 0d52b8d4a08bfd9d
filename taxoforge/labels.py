"""Normalizing open labels (tags, use cases, skills) the way InsTag and TACOS do.

Three steps: a canonical form (Unicode-folded, lowercase, punctuation out, each word
lemmatized), merging near-synonyms whose embeddings are at least ``threshold`` similar (the
more frequent label absorbs the other), then dropping labels seen fewer than ``min_frequency``
times. Every merge and drop is reported, so a user sees what became of each label.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import simplemma

from taxoforge.embeddings import Embedder

__all__ = ["Normalized", "canonical", "normalize_labels"]

_PUNCT = re.compile(r"[^\w\s-]+")
_SPACE = re.compile(r"[\s_-]+")


def canonical(label: str, language: str = "en") -> str:
    """The label's canonical form: "Data-Structures!" and "data structure" are the same."""
    text = unicodedata.normalize("NFKC", label).casefold()
    text = _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()
    words = [simplemma.lemmatize(word, lang=language) for word in text.split()]
    return " ".join(w.casefold() for w in words)


@dataclass
class Normalized:
    """What normalization kept, merged and dropped."""

    # Every raw label -> the label it counts as now (absent: dropped).
    mapping: dict[str, str] = field(default_factory=dict)
    # Kept labels and how often they occur (merged labels' counts included).
    counts: Counter[str] = field(default_factory=Counter)
    # Kept label -> the canonical labels merged into it.
    merges: dict[str, list[str]] = field(default_factory=dict)
    # (label, count, reason) for each dropped label.
    dropped: list[tuple[str, int, str]] = field(default_factory=list)


async def normalize_labels(
    labels: Sequence[str],
    embedder: Embedder | None,
    min_frequency: int = 2,
    threshold: float = 0.85,
    language: str = "en",
) -> Normalized:
    """Normalize a bag of labels (with repeats: frequency counts).

    Args:
        labels: every occurrence of every label.
        embedder: gives the similarity for merging; None merges canonical forms only.
        min_frequency: labels (after merging) seen fewer times are dropped.
        threshold: cosine similarity at which two labels are one.
    """
    out = Normalized()
    raw_to_canon: dict[str, str] = {}
    canon_counts: Counter[str] = Counter()
    empty: Counter[str] = Counter()
    for label in labels:
        canon = raw_to_canon.setdefault(label, canonical(label, language))
        if canon:
            canon_counts[canon] += 1
        else:
            empty[label] += 1
    for label, count in empty.items():
        out.dropped.append((label, count, "nothing left after normalization"))
    # Most frequent first, so the common form absorbs its rarer variants; ties alphabetical.
    ordered = sorted(canon_counts, key=lambda c: (-canon_counts[c], c))
    into: dict[str, str] = {c: c for c in ordered}
    if embedder is not None and len(ordered) > 1:
        vectors = np.asarray(await embedder.embed(ordered), dtype=np.float32)
        reps: list[int] = []
        for i in range(len(ordered)):
            if reps:
                sims = vectors[reps] @ vectors[i]
                best = int(np.argmax(sims))
                if float(sims[best]) >= threshold:
                    into[ordered[i]] = ordered[reps[best]]
                    continue
            reps.append(i)
    merged_counts: Counter[str] = Counter()
    for canon, rep in into.items():
        merged_counts[rep] += canon_counts[canon]
        if canon != rep:
            out.merges.setdefault(rep, []).append(canon)
    for rep, count in merged_counts.items():
        if count < min_frequency:
            out.dropped.append((rep, count, f"seen {count} times, fewer than {min_frequency}"))
        else:
            out.counts[rep] = count
    out.dropped.sort(key=lambda d: (-d[1], d[0]))
    for rep in [r for r in out.merges if r not in out.counts]:
        del out.merges[rep]
    for raw, canon in raw_to_canon.items():
        rep = into.get(canon, "")
        if rep in out.counts:
            out.mapping[raw] = rep
    return out
