"""Label normalization: canonical forms, merging near-synonyms, dropping rare labels."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
import simplemma

from taxoforge.labels import canonical, normalize_labels, spelling_variants


class FakeEmbedder:
    """Unit vectors with similarities chosen by the test.

    Every text gets its own axis. A text listed in ``near`` as a variant of an anchor text points
    at the anchor with cosine ``similarity`` (the rest of its length on its own axis); texts not
    related that way are orthogonal.
    """

    def __init__(self, near: dict[str, str] | None = None, similarity: float = 0.95) -> None:
        self.near = near or {}
        self.similarity = similarity
        self.axes: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def _axis(self, text: str) -> int:
        return self.axes.setdefault(text, len(self.axes))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            anchor = self.near.get(text)
            if anchor is None:
                out[i, self._axis(text)] = 1.0
            else:
                out[i, self._axis(anchor)] = self.similarity
                out[i, self._axis(text)] = math.sqrt(1 - self.similarity**2)
        return out


# ---- canonical ----


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Data-Structures!", "data structure"),
        ("Straße", "STRASSE"),
        ("ＣＡＦÉ", "café"),
        ("Cafe\u0301", "Café"),
        ("under_score", "under  score"),
        ("  Emails  ", "email"),
        ("Tones", "tone"),
    ],
)
def test_canonical_forms_are_equal(first: str, second: str) -> None:
    assert canonical(first) == canonical(second)


def test_canonical_form_is_lowercase_words_lemmatized() -> None:
    assert canonical("Data-Structures!") == "data structure"
    assert canonical("Debugging Python code") == "debug python code"
    assert canonical("a--b__c") == "a b c"


def test_canonical_keeps_different_labels_apart() -> None:
    assert canonical("graph") != canonical("tree")
    assert canonical("café") != canonical("cafe!!")


@pytest.mark.parametrize("label", ["", "   ", "!!!", "?!.,"])
def test_canonical_of_punctuation_only_is_empty(label: str) -> None:
    assert canonical(label) == ""


# ---- normalize_labels without an embedder ----


async def test_without_an_embedder_only_canonical_forms_merge() -> None:
    labels = ["Data-Structures!", "data structure", "Data structures", "graphs", "Graph", "trees"]

    out = await normalize_labels(labels, None, min_frequency=2)

    assert out.counts == {"data structure": 3, "graph": 2}
    assert out.merges == {}
    assert out.dropped == [("tree", 1, "seen 1 times, fewer than 2")]
    assert out.mapping == {
        "Data-Structures!": "data structure",
        "data structure": "data structure",
        "Data structures": "data structure",
        "graphs": "graph",
        "Graph": "graph",
    }


async def test_min_frequency_one_keeps_everything() -> None:
    out = await normalize_labels(["a", "b", "b"], None, min_frequency=1)

    assert out.counts == {"a": 1, "b": 2}
    assert out.dropped == []


async def test_nothing_in_nothing_out() -> None:
    out = await normalize_labels([], FakeEmbedder())

    assert (out.counts, out.mapping, out.merges, out.dropped) == ({}, {}, {}, [])


async def test_labels_without_words_are_ignored() -> None:
    out = await normalize_labels(["!!!", "tone", "tone"], None, min_frequency=1)

    assert out.counts == {"tone": 2}
    assert "!!!" not in out.mapping


async def test_labels_without_words_are_reported_as_dropped() -> None:
    out = await normalize_labels(["!!!", "tone", "tone"], None, min_frequency=1)

    assert [label for label, _, _ in out.dropped] == ["!!!"]


# ---- spelling variants ----


@pytest.mark.parametrize(
    "typo",
    ["grnite", "graniite", "granute", "grnaite", "granitex", "xgranite"],
    ids=["dropped", "added", "replaced", "swapped", "added-last", "added-first"],
)
async def test_a_typo_of_a_frequent_label_merges_into_it(typo: str) -> None:
    out = await normalize_labels(["granite", "Granite", typo.title()], None, min_frequency=2)

    assert out.counts == {"granite": 3}
    assert out.merges == {"granite": [typo]}
    assert out.mapping[typo.title()] == "granite"


async def test_a_typo_in_an_inflected_word_finds_the_label_as_written() -> None:
    # no lemmatizer knows "ahcieving": its canonical form keeps it, two edits from "achieve"
    labels = ["achieving goals", "Achieving Goals", "achieved goal", "ahcieving goals"]

    out = await normalize_labels(labels, None, min_frequency=2)

    assert canonical("ahcieving goals") == "ahcieving goal"
    assert out.counts == {"achieve goal": 4}
    assert out.merges == {"achieve goal": ["ahcieving goal"]}


async def test_words_run_together_are_one_label_whatever_their_counts() -> None:
    out = await normalize_labels(["datastructure", "Data-Structure", "data structure"], None)

    assert out.counts == {"data structure": 3}
    assert out.merges == {"data structure": ["datastructure"]}


@pytest.mark.parametrize(
    ("labels", "kept"),
    [
        # of two spellings seen about as often, neither is the other's typo
        (["grnaite"] * 3 + ["granite"] * 2, {"grnaite": 3, "granite": 2}),
        # a word the dictionary knows is no typo, however rare
        (["causal"] * 5 + ["casual"], {"causal": 5, "casual": 1}),
        (
            ["causal inference"] * 5 + ["casual inference"],
            {"causal inference": 5, "casual inference": 1},
        ),
        # short words are one edit from too many others
        (["tone"] * 5 + ["tonne"], {"tone": 5, "tonne": 1}),
        (["sort"] * 5 + ["sqort"], {"sort": 5, "sqort": 1}),
        # a character of these scripts is a word or a syllable, not a letter
        (["机器学习算法"] * 5 + ["机器学习方法"], {"机器学习算法": 5, "机器学习方法": 1}),
        (
            ["데이터 분석하기"] * 5 + ["데이터 분석하다"],
            {"데이터 분석하기": 5, "데이터 분석하다": 1},
        ),
        # two edits are not a typo
        (["granite"] * 5 + ["grnatie"], {"granite": 5, "grnatie": 1}),
    ],
    ids=[
        "comparable-counts",
        "known-word",
        "known-words",
        "short",
        "short-head",
        "chinese",
        "korean",
        "two-edits",
    ],
)
async def test_labels_that_are_not_typos_stay_apart(
    labels: list[str], kept: dict[str, int]
) -> None:
    out = await normalize_labels(labels, None, min_frequency=1)

    assert out.counts == kept
    assert out.merges == {}


async def test_a_typo_joins_the_most_frequent_label_it_is_one_edit_from() -> None:
    labels = ["planet"] * 3 + ["planer"] * 2 + ["planex"]

    out = await normalize_labels(labels, None, min_frequency=1)

    assert out.counts == {"planet": 4, "planer": 2}
    assert out.merges == {"planet": ["planex"]}


async def test_the_embedder_sees_one_spelling_counted_with_its_variants() -> None:
    embedder = FakeEmbedder()
    labels = ["tone", "tone", "zircon", "zircon", "zirconn", "zircn"]

    await normalize_labels(labels, embedder)

    # zircon counts 4 with its typos, so it comes before tone (2); the typos are not embedded
    assert embedder.calls == [["zircon", "tone"]]


async def test_without_the_spelling_step_the_embedder_sees_every_canonical_form() -> None:
    embedder = FakeEmbedder()
    labels = ["tone", "tone", "tone", "zircon", "zircon", "zirconn"]

    out = await normalize_labels(labels, embedder, min_frequency=1, spelling=False)

    assert embedder.calls == [["tone", "zircon", "zirconn"]]
    assert out.counts == {"tone": 3, "zircon": 2, "zirconn": 1}


def _osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance, by its textbook table."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _spelling_by_definition(
    ordered: list[str], counts: Counter[str], written: dict[str, set[str]]
) -> dict[str, str]:
    """The spelling step as its docstring defines it, comparing every pair of spellings."""
    head_of: dict[str, str] = {}
    heads: list[str] = []

    spellings = {
        label: {w for w in {label.replace(" ", ""), *written.get(label, ())} if len(w) >= 5}
        for label in ordered
    }

    def one_edit(a: str, b: str) -> bool:
        # the distance is at least the lengths' difference: the table only where it may be 1
        return abs(len(a) - len(b)) <= 1 and _osa_distance(a, b) == 1

    for label in ordered:
        letters = label.replace(" ", "")
        same = [h for h in heads if h.replace(" ", "") == letters]
        known = all(simplemma.is_known(w, lang="en") for w in label.split())
        typos = [
            h
            for h in heads
            if len(letters) >= 5
            and max(letters) < "\u2e80"
            and not known
            and counts[h] >= 2 * counts[label]
            and any(one_edit(a, b) for a in spellings[label] for b in spellings[h])
        ]
        if same:
            head_of[label] = same[0]
        elif typos:
            head_of[label] = min(typos, key=lambda h: (-counts[h], h))
        else:
            head_of[label] = label
            heads.append(label)
    return head_of


@pytest.mark.parametrize("seed", range(3))
def test_spelling_variants_equal_their_definition(seed: int) -> None:
    rng = random.Random(seed)
    bases = ["".join(rng.choice("abcde") for _ in range(rng.randint(3, 8))) for _ in range(40)]
    # words the dictionary knows, and their neighbours one edit away
    bases += ["beaded", "decade", "embed", "faced", "cabbed", "baked", "baker", "abided"]
    bases += ["abcde語", "ab語cde", "語abcd"]  # a word-character: never a typo
    labels: list[str] = []
    for _ in range(1000):
        word = list(rng.choice(bases))
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            i = rng.randrange(len(word))
            edit = rng.randrange(4)
            if edit == 0 and len(word) > 1:
                del word[i]
            elif edit == 1:
                word.insert(i, rng.choice("abcde"))
            elif edit == 2:
                word[i] = rng.choice("abcde")
            elif i + 1 < len(word):
                word[i], word[i + 1] = word[i + 1], word[i]
        if len(word) > 2 and rng.random() < 0.2:
            word.insert(rng.randrange(1, len(word)), " ")
        labels.append("".join(word))
    counts = Counter(labels)
    ordered = sorted(counts, key=lambda c: (-counts[c], c))
    # some labels were written otherwise before lemmatizing (an ending the lemma lost)
    written = {
        label: {label.replace(" ", "") + rng.choice(("s", "ed", "ing", "es"))}
        for label in ordered
        if rng.random() < 0.3
    }

    assert spelling_variants(ordered, counts, "en", written) == _spelling_by_definition(
        ordered, counts, written
    )


# ---- normalize_labels with an embedder ----


async def test_near_synonyms_merge_into_the_more_frequent_label() -> None:
    embedder = FakeEmbedder(near={"write email": "email writing"})
    labels = ["email writing", "Email Writing", "email writing", "write email", "tone", "tone"]

    out = await normalize_labels(labels, embedder, min_frequency=2, threshold=0.85)

    assert out.counts == {"email writing": 4, "tone": 2}
    assert out.merges == {"email writing": ["write email"]}
    assert out.mapping == {
        "email writing": "email writing",
        "Email Writing": "email writing",
        "write email": "email writing",
        "tone": "tone",
    }
    # a rare variant merged into a frequent label survives min_frequency
    assert out.dropped == []


async def test_the_more_frequent_label_absorbs_whatever_way_they_are_related() -> None:
    embedder = FakeEmbedder(near={"write email": "email writing"})
    labels = ["write email"] * 3 + ["email writing"]

    out = await normalize_labels(labels, embedder, min_frequency=1, threshold=0.85)

    assert out.counts == {"write email": 4}
    assert out.merges == {"write email": ["email writing"]}
    assert out.mapping == {"write email": "write email", "email writing": "write email"}


async def test_equally_frequent_labels_merge_into_the_first_alphabetically() -> None:
    embedder = FakeEmbedder(near={"a label": "b label"})

    out = await normalize_labels(["b label", "a label"], embedder, min_frequency=1)

    assert out.counts == {"a label": 2}
    assert out.merges == {"a label": ["b label"]}


async def test_the_embedder_sees_canonical_forms_most_frequent_first() -> None:
    embedder = FakeEmbedder()

    await normalize_labels(["Trees", "graph", "Graphs", "tree", "tree"], embedder)

    assert embedder.calls == [["tree", "graph"]]


async def test_a_single_label_needs_no_embedding() -> None:
    embedder = FakeEmbedder()

    out = await normalize_labels(["tone", "Tones"], embedder)

    assert embedder.calls == []
    assert out.counts == {"tone": 2}


@pytest.mark.parametrize(
    ("threshold", "merged"),
    [(0.5, True), (0.75, True), (0.76, False), (0.99, False)],
)
async def test_the_threshold_decides_a_merge(threshold: float, merged: bool) -> None:
    embedder = FakeEmbedder(near={"write email": "email writing"}, similarity=0.75)
    labels = ["email writing", "email writing", "write email"]

    out = await normalize_labels(labels, embedder, min_frequency=1, threshold=threshold)

    if merged:
        assert out.counts == {"email writing": 3}
        assert out.mapping["write email"] == "email writing"
    else:
        assert out.counts == {"email writing": 2, "write email": 1}
        assert out.mapping["write email"] == "write email"
        assert out.merges == {}


async def test_unrelated_labels_never_merge() -> None:
    out = await normalize_labels(["tone", "grammar", "code"], FakeEmbedder(), min_frequency=1)

    assert out.counts == {"tone": 1, "grammar": 1, "code": 1}
    assert out.merges == {}


async def test_min_frequency_applies_after_merging() -> None:
    embedder = FakeEmbedder(near={"write email": "email writing"})
    labels = ["email writing", "write email", "tone", "grammar", "grammar"]

    out = await normalize_labels(labels, embedder, min_frequency=2, threshold=0.9)

    assert out.counts == {"email writing": 2, "grammar": 2}
    assert out.mapping["write email"] == "email writing"
    assert "tone" not in out.mapping
    assert out.dropped == [("tone", 1, "seen 1 times, fewer than 2")]


async def test_a_dropped_label_takes_its_merges_with_it() -> None:
    embedder = FakeEmbedder(near={"write email": "email writing"})
    labels = ["email writing", "write email", "tone", "tone", "tone"]

    out = await normalize_labels(labels, embedder, min_frequency=3, threshold=0.9)

    assert out.counts == {"tone": 3}
    assert out.merges == {}
    assert out.dropped == [("email writing", 2, "seen 2 times, fewer than 3")]
    assert set(out.mapping) == {"tone"}


async def test_dropped_labels_are_listed_most_frequent_first() -> None:
    labels = ["b", "b", "a", "a", "c", "d", "d", "d", "keep"] + ["keep"] * 4

    out = await normalize_labels(labels, None, min_frequency=4)

    assert out.counts == {"keep": 5}
    assert [(label, count) for label, count, _ in out.dropped] == [
        ("d", 3),
        ("a", 2),
        ("b", 2),
        ("c", 1),
    ]
    assert all(reason.endswith("fewer than 4") for _, _, reason in out.dropped)


# ---- greedy_merge: the blocked nearest-neighbour walk equals the all-pairs walk ----


def _all_pairs_merge(vectors: np.ndarray, threshold: float) -> list[int]:
    """The merge as first written: each row against every representative before it."""
    rep_of = list(range(len(vectors)))
    reps: list[int] = []
    for i in range(len(vectors)):
        if reps:
            sims = vectors[reps] @ vectors[i]
            best = int(np.argmax(sims))
            if float(sims[best]) >= threshold:
                rep_of[i] = reps[best]
                continue
        reps.append(i)
    return rep_of


def _clustered_vectors(n: int, seed: int) -> np.ndarray:
    """Unit vectors in tight groups (variants of a few anchors) plus loners, shuffled."""
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(n // 8, 32))
    rows = anchors[rng.integers(0, len(anchors), size=n)] + rng.normal(scale=0.25, size=(n, 32))
    rows[: n // 4] = rng.normal(size=(n // 4, 32))
    rng.shuffle(rows)
    out = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return out


@pytest.mark.parametrize("block", [64, 1024])
@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.97])
def test_greedy_merge_equals_the_all_pairs_walk(
    monkeypatch: pytest.MonkeyPatch, block: int, threshold: float
) -> None:
    from taxoforge import labels

    monkeypatch.setattr(labels, "_MAX_BLOCK", block)
    vectors = _clustered_vectors(700, seed=int(threshold * 100) + block)
    got = labels.greedy_merge(vectors, threshold).tolist()
    assert got == _all_pairs_merge(vectors, threshold)
    assert len(set(got)) < len(got)  # some rows did merge: the case is not trivial


def test_greedy_merge_joins_a_representative_not_a_merged_row() -> None:
    from taxoforge.labels import greedy_merge

    # b is close to a and merges into it; c is close to b only: it stays on its own.
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.9, math.sqrt(1 - 0.81), 0.0])
    c = np.array([0.6, 0.8, 0.0])
    vectors = np.vstack([a, b, c]).astype(np.float32)
    assert float(vectors[1] @ vectors[2]) > 0.85 > float(vectors[0] @ vectors[2])
    assert greedy_merge(vectors, 0.85).tolist() == [0, 0, 2]


async def test_normalization_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from taxoforge import labels

    threads: set[int] = set()
    real = labels._lemmatized

    def spy(text: str, language: str) -> str:
        threads.add(threading.get_ident())
        return real(text, language)

    monkeypatch.setattr(labels, "_lemmatized", spy)
    await normalize_labels(["tone", "Tones", "grammar"], FakeEmbedder(), min_frequency=1)
    assert threads and threading.get_ident() not in threads
