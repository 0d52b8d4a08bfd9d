"""Duplicate instructions within a job: text normalization, MinHash similarity, and claims
through an in-memory fake of the item store."""

from __future__ import annotations

import numpy as np
import pytest

from taxoforge.dedupe import DuplicateIndex, jaccard, normalize_text, signature

LONG = (
    "Explain how the water cycle moves water between the oceans, the atmosphere and the land, "
    "and describe the role of evaporation and condensation in it."
)
ONE_WORD_EDIT = LONG.replace("condensation", "precipitation")
UNRELATED = (
    "Write a Python function that parses a CSV file of bank transactions and reports the "
    "monthly totals per category."
)


class FakeItemStore:
    """An in-memory FAKE of the three ItemStore methods DuplicateIndex uses."""

    def __init__(self) -> None:
        self.claims: dict[str, str] = {}
        self.raw: dict[str, bytes] = {}
        self.reads: list[str] = []

    async def claim(self, key: str, owner: str) -> str:
        """First writer wins; returns whoever holds the key."""
        return self.claims.setdefault(key, owner)

    async def put_raw(self, key: str, value: bytes, wait: bool = True) -> None:
        self.raw[key] = value

    async def get_raw(self, key: str) -> bytes | None:
        self.reads.append(key)
        return self.raw.get(key)

    def holders(self) -> set[str]:
        """The items holding claims (a band's claim also carries its holder's signature)."""
        return {value.rpartition("|")[0] or value for value in self.claims.values()}


@pytest.fixture
def store() -> FakeItemStore:
    return FakeItemStore()


@pytest.fixture
def index(store: FakeItemStore) -> DuplicateIndex:
    return DuplicateIndex(store)  # type: ignore[arg-type]


# ---- normalize_text ----


def test_normalize_folds_case_punctuation_and_spacing() -> None:
    assert normalize_text("  Hello, WORLD!!  How's it\n\tgoing? ") == "hello world how s it going"


def test_normalize_folds_unicode_encodings() -> None:
    assert normalize_text("cafe\u0301") == normalize_text("caf\u00e9")
    # full-width letters and digits
    assert normalize_text("\uff21\uff22\uff23 \uff11\uff12\uff13") == "abc 123"
    assert normalize_text("STRASSE") == normalize_text("straße")


def test_normalize_of_punctuation_only_is_empty() -> None:
    assert normalize_text(" ?! ... -- ") == ""


# ---- signature and jaccard ----


def test_signature_is_a_fixed_size_deterministic_array() -> None:
    sig = signature(LONG)

    assert sig.ndim == 1
    assert sig.shape == signature(UNRELATED).shape
    assert sig.dtype == np.uint64
    assert np.array_equal(sig, signature(LONG))


def test_identical_texts_are_fully_similar() -> None:
    assert jaccard(signature(LONG), signature(LONG)) == 1.0


def test_texts_that_differ_in_case_and_punctuation_only_are_fully_similar() -> None:
    assert jaccard(signature(LONG), signature(LONG.upper().replace(",", " ;"))) == 1.0


def test_unrelated_texts_are_not_similar() -> None:
    assert jaccard(signature(LONG), signature(UNRELATED)) < 0.3


def test_a_one_word_edit_of_a_long_sentence_is_very_similar() -> None:
    similarity = jaccard(signature(LONG), signature(ONE_WORD_EDIT))

    assert 0.6 < similarity < 1.0


# ---- DuplicateIndex.claim ----


async def test_the_first_claimant_keeps_the_text(
    index: DuplicateIndex, store: FakeItemStore
) -> None:
    assert await index.claim("job", "i1", LONG, threshold=0.8) is None

    assert len(store.claims) > 1, "the exact text and every MinHash band"
    assert store.holders() == {"i1"}
    assert store.raw == {}, "the signature travels with the band claims"


async def test_an_exact_duplicate_from_another_item_is_rejected(
    index: DuplicateIndex, store: FakeItemStore
) -> None:
    await index.claim("job", "i1", LONG, threshold=0.8)

    rejection = await index.claim("job", "i2", LONG, threshold=0.8)

    assert store.holders() == {"i1"}, "the first claimant keeps every claim"
    assert rejection is not None
    assert rejection.reason == "duplicate"
    assert rejection.text == LONG
    assert rejection.detail == "same text as i1"


async def test_a_duplicate_up_to_case_and_punctuation_is_exact(index: DuplicateIndex) -> None:
    await index.claim("job", "i1", LONG, threshold=0)
    variant = "  " + LONG.upper().replace(",", "") + "!!"

    rejection = await index.claim("job", "i2", variant, threshold=0)

    assert rejection is not None
    assert rejection.reason == "duplicate"
    assert rejection.text == variant


async def test_a_near_duplicate_above_the_threshold_is_rejected(index: DuplicateIndex) -> None:
    await index.claim("job", "i1", LONG, threshold=0.6)

    rejection = await index.claim("job", "i2", ONE_WORD_EDIT, threshold=0.6)

    assert rejection is not None
    assert rejection.reason == "near_duplicate"
    assert rejection.text == ONE_WORD_EDIT
    assert rejection.detail.endswith("similar to i1")
    similarity = float(rejection.detail.split()[0])
    assert 0.6 <= similarity < 1.0


async def test_a_near_duplicate_below_the_threshold_passes(index: DuplicateIndex) -> None:
    await index.claim("job", "i1", LONG, threshold=0.99)

    assert await index.claim("job", "i2", ONE_WORD_EDIT, threshold=0.99) is None


async def test_unrelated_texts_both_pass(index: DuplicateIndex) -> None:
    assert await index.claim("job", "i1", LONG, threshold=0.5) is None
    assert await index.claim("job", "i2", UNRELATED, threshold=0.5) is None


async def test_a_reclaim_by_the_same_item_is_not_a_duplicate(index: DuplicateIndex) -> None:
    assert await index.claim("job", "i1", LONG, threshold=0.8) is None

    assert await index.claim("job", "i1", LONG, threshold=0.8) is None
    assert await index.claim("job", "i1", ONE_WORD_EDIT, threshold=0.8) is None


async def test_threshold_zero_disables_near_duplicate_checks(
    index: DuplicateIndex, store: FakeItemStore
) -> None:
    assert await index.claim("job", "i1", LONG, threshold=0) is None

    assert await index.claim("job", "i2", ONE_WORD_EDIT, threshold=0) is None
    assert store.raw == {}, "no signature is stored without near-duplicate checks"
    assert len(store.claims) == 2, "only the exact-text keys are claimed"


async def test_other_jobs_do_not_collide(index: DuplicateIndex) -> None:
    await index.claim("job-a", "i1", LONG, threshold=0.8)

    assert await index.claim("job-b", "i2", LONG, threshold=0.8) is None


async def test_a_near_duplicate_is_told_from_the_band_claims_alone(
    index: DuplicateIndex, store: FakeItemStore
) -> None:
    await index.claim("job", "i1", LONG, threshold=0.6)
    writes = len(store.claims)

    rejection = await index.claim("job", "i2", ONE_WORD_EDIT, threshold=0.6)

    assert rejection is not None and rejection.reason == "near_duplicate"
    assert writes == 11, "one exact claim and ten band claims, no signature written apart"
    assert store.raw == {} and store.reads == [], "the holder's signature came with its claim"


async def test_claims_of_the_old_format_are_still_compared(
    index: DuplicateIndex, store: FakeItemStore
) -> None:
    # A job that ran before the signature moved into the band claims: bare item ids, and
    # the signature under its own key.
    await index.claim("job", "i1", LONG, threshold=0.6)
    store.claims = dict.fromkeys(store.claims, "i1")
    store.raw["job.dedup.s.i1"] = signature(LONG).tobytes()

    rejection = await index.claim("job", "i2", ONE_WORD_EDIT, threshold=0.6)

    assert rejection is not None and rejection.detail.endswith("similar to i1")
