"""Duplicates inside an import, and overlap of training texts with benchmark prompts."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from services.selector.decontam import Contamination, Decontaminator, Deduplicator, _BandIndex
from taxoforge.dedupe import WordMemo

_LONG = (
    "Explain how a hash table resolves collisions with separate chaining and with open "
    "addressing, and compare the expected cost of a lookup when the load factor grows past "
    "three quarters in each of the two schemes"
)


# ---- Deduplicator ----


def test_exact_duplicates_ignore_case_punctuation_and_spacing():
    dedup = Deduplicator(0.0)
    assert dedup.check("r1", "What is the capital of France?") is None
    assert dedup.check("r2", "  what IS the capital   of france ") == (
        "duplicate",
        "same text as r1",
    )
    assert dedup.check("r3", "What is the capital of Spain?") is None
    assert len(dedup) == 2


def test_a_duplicate_is_not_remembered_and_points_at_the_first_text():
    dedup = Deduplicator(0.0)
    dedup.check("r1", "same words")
    dedup.check("r2", "Same words!")
    assert dedup.check("r3", "same, words") == ("duplicate", "same text as r1")


def test_checking_a_remembered_item_again_under_its_own_id_is_not_a_duplicate():
    dedup = Deduplicator(0.8)
    assert dedup.check("r1", _LONG) is None
    assert dedup.check("r1", _LONG) is None
    assert dedup.check("r2", _LONG) == ("duplicate", "same text as r1")


def test_near_duplicates_are_found_at_0_8_and_unrelated_texts_are_not():
    dedup = Deduplicator(0.8)
    assert dedup.check("r1", _LONG) is None
    # the last word changed: 34 of the 35 word bigrams kept (Jaccard 34/36, estimate 0.92)
    near = _LONG.replace("schemes", "designs")
    found = dedup.check("r2", near)
    assert found is not None
    reason, detail = found
    assert reason == "near_duplicate"
    # the exact figure: 34 of the 36 bigrams of the two texts are shared
    assert detail.startswith(f"{34 / 36:.3f} similar to r1 (exact word-shingle Jaccard")
    unrelated = (
        "Write a short poem about autumn leaves falling on a quiet river at dusk while the "
        "town lights come on one by one"
    )
    assert dedup.check("r3", unrelated) is None


def test_a_text_changed_too_much_is_not_a_near_duplicate():
    dedup = Deduplicator(0.8)
    dedup.check("r1", _LONG)
    half = " ".join(_LONG.split()[:20]) + " and then summarize the answer for a student"
    assert dedup.check("r2", half) is None


def test_near_threshold_0_finds_exact_duplicates_only():
    dedup = Deduplicator(0.0)
    assert dedup.check("r1", _LONG) is None
    assert dedup.check("r2", _LONG.replace("schemes", "designs")) is None
    assert dedup.check("r3", _LONG.upper()) == ("duplicate", "same text as r1")


def test_near_duplicate_names_the_most_similar_earlier_text():
    words = [f"w{i}" for i in range(40)]
    # "far" changes the first 6 words (exact Jaccard 33/45 = 0.733 with the query), "close"
    # the last 3 (36/42 = 0.857); they are 30/48 = 0.625 similar to each other, so both are
    # remembered.
    far = " ".join(f"x{i}" if i < 6 else w for i, w in enumerate(words))
    close = " ".join(f"y{i}" if i >= 37 else w for i, w in enumerate(words))
    dedup = Deduplicator(0.7)
    assert dedup.check("far", far) is None
    assert dedup.check("close", close) is None
    found = dedup.check("query", " ".join(words))
    assert found is not None and found[0] == "near_duplicate"
    assert found[1].startswith(f"{36 / 42:.3f} similar to close")


def test_near_threshold_1_flags_only_texts_with_the_same_word_pairs():
    dedup = Deduplicator(1.0)
    assert dedup.check("a", "x y x y") is None
    found = dedup.check("b", "y x y x y")
    assert found is not None and found[1].startswith("1.000 similar to a")
    assert dedup.check("c", "x y x z") is None


def test_a_low_near_threshold_still_confirms_each_candidate():
    dedup = Deduplicator(0.05)
    assert dedup.check("a", "x y z w") is None
    found = dedup.check("b", "x y z w v")
    assert found is not None and found[1].startswith("0.750 similar to a")
    assert dedup.check("c", "p q r s") is None


def test_deduplicator_rejects_a_threshold_outside_0_1():
    with pytest.raises(ValueError):
        Deduplicator(1.5)


# ---- Decontaminator ----

_GSM = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?",
    "Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of "
    "babysitting. How much did she earn?",
]
_MMLU = [
    "Which of the following is the body cavity that contains the pituitary gland? "
    "A. Abdominal B. Cranial C. Pleural D. Spinal",
    "What is 2 + 2?",
]


def test_a_benchmark_prompt_embedded_in_a_longer_text_is_found():
    decon = Decontaminator()
    assert decon.add_benchmark("gsm8k", _GSM) == 2
    text = f"Please solve this for me step by step. {_GSM[0]} Show your work and be brief."
    found = decon.check(text)
    assert found is not None
    assert found.benchmark == "gsm8k"
    assert 0.0 < found.overlap < 1.0
    assert found.matched >= 1
    assert found.evidence in "natalia sold clips to 48 of her friends in april and then she sold"


def test_a_copied_prompt_overlaps_fully_modulo_case_and_punctuation():
    decon = Decontaminator()
    decon.add_benchmark("gsm8k", _GSM)
    found = decon.check(_GSM[1].upper().replace(".", " ! "))
    assert found == Contamination(
        "gsm8k", 1.0, 12, "weng earns 12 dollars an hour for babysitting yesterday she"
    )


def test_unrelated_text_is_not_contaminated():
    decon = Decontaminator()
    decon.add_benchmark("gsm8k", _GSM)
    assert decon.check(_LONG) is None
    assert decon.check("") is None


def test_the_ngram_length_decides_how_much_must_be_shared():
    shared = "sold clips to 48 of her friends"  # 7 words of a GSM8K prompt
    text = f"Tell me a story where a child {shared} while the parents were away on a trip"
    assert Decontaminator(ngram=10).add_benchmark("gsm8k", _GSM) == 2
    ten = Decontaminator(ngram=10)
    ten.add_benchmark("gsm8k", _GSM)
    assert ten.check(text) is None
    seven = Decontaminator(ngram=7)
    seven.add_benchmark("gsm8k", _GSM)
    found = seven.check(text)
    assert found is not None
    assert found.evidence == shared
    assert found.matched == 1


def test_an_overlap_threshold_needs_that_fraction_of_the_texts_ngrams():
    text = f"{_GSM[1]} " + " ".join(f"filler{i}" for i in range(30))
    loose = Decontaminator(overlap=0.0)
    loose.add_benchmark("gsm8k", _GSM)
    found = loose.check(text)
    assert found is not None
    # the prompt's 21 words make 12 of the 42 10-grams of the text's 51 words
    assert found.overlap == pytest.approx(12 / 42)
    assert found.matched == 12
    for limit, contaminated in ((0.28, True), (0.29, False), (0.5, False)):
        strict = Decontaminator(overlap=limit)
        strict.add_benchmark("gsm8k", _GSM)
        assert (strict.check(text) is not None) is contaminated


def test_a_short_text_is_contaminated_by_an_equal_or_contained_short_prompt():
    decon = Decontaminator()
    decon.add_benchmark("mmlu", _MMLU)
    exact = decon.check("what is 2+2")
    assert exact == Contamination("mmlu", 1.0, 1, "what is 2 2")
    within = decon.check("Quick: what is 2 + 2? Thanks")
    assert within is not None
    assert within.evidence == "what is 2 2"
    assert within.overlap == pytest.approx(4 / 6)
    assert decon.check("what is 3 + 3?") is None
    assert Decontaminator(overlap=0.8).check("Quick: what is 2 + 2? Thanks") is None
    strict = Decontaminator(overlap=0.8)
    strict.add_benchmark("mmlu", _MMLU)
    assert strict.check("Quick: what is 2 + 2? Thanks") is None
    assert strict.check("What is 2 + 2") is not None


def test_each_match_names_its_own_benchmark():
    decon = Decontaminator()
    decon.add_benchmark("gsm8k", _GSM)
    decon.add_benchmark("mmlu", _MMLU)
    assert decon.benchmarks == ["gsm8k", "mmlu"]
    gsm = decon.check(f"Answer this: {_GSM[1]}")
    mmlu = decon.check(f"Answer this: {_MMLU[0]}")
    short = decon.check("what is 2 + 2")
    assert gsm is not None and gsm.benchmark == "gsm8k"
    assert mmlu is not None and mmlu.benchmark == "mmlu"
    assert short is not None and short.benchmark == "mmlu"


def test_the_benchmark_with_the_larger_overlap_wins():
    decon = Decontaminator()
    decon.add_benchmark("partial", [" ".join(_LONG.split()[:12])])
    decon.add_benchmark("full", [_LONG])
    found = decon.check(_LONG)
    assert found is not None
    assert (found.benchmark, found.overlap) == ("full", 1.0)


def test_adding_to_a_benchmark_again_keeps_its_earlier_prompts():
    decon = Decontaminator()
    decon.add_benchmark("gsm8k", _GSM[:1])
    assert decon.add_benchmark("gsm8k", ["", "  ", _GSM[1]]) == 1
    assert decon.check(_GSM[0]) is not None
    assert decon.check(_GSM[1]) is not None
    assert decon.benchmarks == ["gsm8k"]


def test_decontaminator_rejects_bad_settings():
    with pytest.raises(ValueError):
        Decontaminator(ngram=0)
    with pytest.raises(ValueError):
        Decontaminator(overlap=1.5)


# ---- record vs query, shared inputs, exact confirmation ----


def _bigrams(text: str) -> set[str]:
    words = text.split()
    return {f"{a} {b}" for a, b in itertools.pairwise(words)}


def _pairs(lo: float, hi: float, count: int, seed: int) -> list[tuple[str, str, float]]:
    """``count`` pairs of texts (each pair with its own words) whose word-bigram Jaccard, as a
    set computation here, is in [lo, hi)."""
    import random

    rng = random.Random(seed)
    pairs: list[tuple[str, str, float]] = []
    while len(pairs) < count:
        n = len(pairs)
        words = [f"s{seed}p{n}w{i}" for i in range(rng.randint(25, 80))]
        changed = list(words)
        for i in rng.sample(range(len(words)), rng.randint(1, 8)):
            changed[i] = f"s{seed}p{n}x{i}"
        a, b = " ".join(words), " ".join(changed)
        inter, union = _bigrams(a) & _bigrams(b), _bigrams(a) | _bigrams(b)
        similarity = len(inter) / len(union)
        if lo <= similarity < hi:
            pairs.append((a, b, similarity))
    return pairs


def test_pairs_just_below_the_threshold_are_kept_and_just_above_are_dropped_by_exact_figure():
    below = _pairs(0.69, 0.80, 150, seed=1)
    above = _pairs(0.80, 0.86, 150, seed=2)
    dedup = Deduplicator(0.8)
    for n, (a, _, _) in enumerate(below + above):
        assert dedup.check(f"a{n}", a) is None
    for n, (_, b, similarity) in enumerate(below + above):
        found = dedup.check(f"b{n}", b)
        if similarity < 0.8:
            assert found is None, (similarity, found)  # no drop below the threshold
        else:
            assert found is not None, similarity  # no pair at or above it is missed
            assert found[0] == "near_duplicate"
            assert found[1].startswith(f"{similarity:.3f} similar to a{n} (exact")


def test_two_answers_to_one_prompt_are_both_kept_by_record_and_one_by_query():
    prompt = "Explain why the sky is blue to a ten year old child in three sentences"
    good = "Sunlight is made of colours; the air scatters blue light the most, so we see blue."
    bad = "The sky is blue because it reflects the ocean, which is blue."
    record = Deduplicator(0.8)
    assert record.check("r1", prompt, good) is None
    assert record.check("r2", prompt, bad) is None
    assert record.check("r3", prompt.upper(), good + "!") == ("duplicate", "same text as r1")
    near = record.check("r4", prompt, good + " Indeed")
    assert near is not None and near[0] == "near_duplicate" and "response" in near[1]

    query = Deduplicator(0.8, mode="query")
    assert query.check("r1", prompt, good) is None
    assert query.check("r2", prompt, bad) == ("duplicate", "same text as r1")


def test_different_tasks_on_one_long_input_are_not_near_duplicates():
    article = " ".join(f"sentence{i} about the harbour and its boats" for i in range(40))
    dedup = Deduplicator(0.8, mode="query")
    assert dedup.check("r1", "Summarize the article in two sentences.", context=article) is None
    assert dedup.check("r2", "List every boat the article names.", context=article) is None
    # the same task on the same input, reworded a little, is one (instruction 6/7 = 0.857)
    again = dedup.check("r3", "Summarize the article in two sentences please.", context=article)
    assert again is not None and again[0] == "near_duplicate" and "similar to r1" in again[1]
    # the same instruction on another input is another task
    other = " ".join(f"line{i} about a mountain village" for i in range(40))
    assert dedup.check("r4", "Summarize the article in two sentences.", context=other) is None


def test_an_unknown_dedup_mode_is_refused():
    with pytest.raises(ValueError, match="dedup mode"):
        Deduplicator(0.8, mode="answer")


def test_a_page_checked_at_once_decides_as_one_record_at_a_time():
    # Duplicates inside one page and across pages, exact and near, in record mode: the
    # verdicts and details of check_many are those of check, record by record.
    rng = random.Random(9)
    vocab = [f"v{i}" for i in range(300)]
    bases = [" ".join(rng.choice(vocab) for _ in range(rng.randint(20, 60))) for _ in range(40)]
    records: list[tuple[str, str, str | None, str]] = []
    for n in range(160):
        base = rng.choice(bases)
        kind = rng.randrange(4)
        text = base if kind == 0 else base.upper() + "!" if kind == 1 else base + " please"
        if kind == 3:
            text = " ".join(rng.choice(vocab) for _ in range(30))
        records.append((f"i{n}", text, f"answer {n % 3}", ""))
    one = Deduplicator(0.8)
    expected = [one.check(*r) for r in records]
    paged = Deduplicator(0.8)
    got = [v for start in range(0, 160, 37) for v in paged.check_many(records[start : start + 37])]
    assert got == expected
    # Pages whose words come from a WordMemo (shared with the contamination check) decide alike.
    memo = Deduplicator(0.8)
    shared = [
        v
        for start in range(0, 160, 37)
        for v in memo.check_many(records[start : start + 37], WordMemo())
    ]
    assert shared == expected
    kinds = {v[0] for v in expected if v is not None}
    assert kinds == {"duplicate", "near_duplicate"}, "the records hold both kinds"
    assert len(paged) == len(one)


def test_check_many_of_no_records_is_empty():
    assert Deduplicator(0.8).check_many([]) == []


@pytest.mark.parametrize("overlap", [0.0, 0.3])
def test_texts_checked_at_once_get_what_one_check_each_gives(overlap: float):
    rng = random.Random(21)
    vocab = [f"t{i}" for i in range(60)]

    def words(n: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(n))

    prompts_a = [words(rng.randint(12, 30)) for _ in range(20)] + ["t1 t2 t3", "t4 t5"]
    prompts_b = [words(rng.randint(12, 30)) for _ in range(20)]
    decon = Decontaminator(ngram=6, overlap=overlap)
    decon.add_benchmark("a", prompts_a)
    decon.add_benchmark("b", prompts_b)
    decon.add_benchmark("empty", [])
    texts = ["", "!!", "t1 t2 t3", "t9 t4 t5 t8", words(5)]
    for _ in range(120):
        parts = [words(rng.randint(0, 20))]
        if rng.random() < 0.6:
            source = rng.choice(prompts_a + prompts_b).split()
            start = rng.randrange(len(source))
            parts.append(" ".join(source[start : start + rng.randint(3, 12)]).upper())
        parts.append(words(rng.randint(0, 20)))
        texts.append(", ".join(parts))
    expected = [decon.check(t) for t in texts]
    assert decon.check_many([[t] for t in texts]) == expected
    assert decon.check_many([[t] for t in texts], WordMemo()) == expected
    # a text in parts is checked as their "\n"-join
    halves = [[t[: len(t) // 2], t[len(t) // 2 :]] for t in texts]
    assert decon.check_many(halves) == [decon.check("\n".join(h)) for h in halves]
    assert sum(e is not None for e in expected) > 5, "the texts hold contaminated ones"
    assert {e.benchmark for e in expected if e is not None} >= {"a", "b"}


def test_the_band_index_finds_every_record_sharing_a_key_and_stays_in_few_runs():
    rng = np.random.default_rng(2)
    index = _BandIndex()
    truth: dict[int, set[int]] = {}
    owner = 0
    for _ in range(60):
        rows = int(rng.integers(1, 40))
        keys = rng.integers(0, 300, size=(rows, 5)).astype(np.uint64)  # many shared keys
        owners = np.arange(owner, owner + rows)
        owner += rows
        for row, who in zip(keys.tolist(), owners.tolist(), strict=True):
            for key in row:
                truth.setdefault(key, set()).add(who)
        index.add(keys.ravel(), np.repeat(owners, 5))
        assert len(index._runs) <= 2 + math.log2(owner * 5)
    queries = rng.integers(0, 320, size=(50, 5)).astype(np.uint64)
    found = index.lookup(queries)
    for row, got in zip(queries.tolist(), found, strict=True):
        expected = set().union(*(truth.get(key, set()) for key in row))
        assert set(got.tolist()) == expected  # a record sharing two keys is listed twice
