"""The generator's duplicate index against a real nats-server: one claim a text, near
duplicates told from the job's claims in the order they were written, the same answer on
every replica and on redelivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from taxoforge.bus import Bus
from taxoforge.dedupe import DuplicateIndex
from taxoforge.errors import TransientError
from taxoforge.store import ItemStore, scan
from tests.unit.taxoforge.test_dedupe import LONG, ONE_WORD_EDIT, UNRELATED


@pytest_asyncio.fixture
async def index(bus: Bus) -> AsyncIterator[DuplicateIndex]:
    index = DuplicateIndex(ItemStore(bus))
    yield index
    await index.close()


async def claims_of(bus: Bus, job_id: str) -> dict[str, bytes]:
    return {key: value async for key, value in scan(bus, "tf-items", f"{job_id}.dedup.>")}


async def test_a_text_makes_one_claim_holding_its_item_and_signature(
    bus: Bus, index: DuplicateIndex
) -> None:
    assert await index.claim("job", "i1", LONG, threshold=0.8) is None

    claims = await claims_of(bus, "job")
    assert len(claims) == 1, claims.keys()
    (key, value) = next(iter(claims.items()))
    assert key.startswith("job.dedup.x.")
    assert value.startswith(b"i1|")


async def test_an_exact_duplicate_from_another_item_is_rejected(
    bus: Bus, index: DuplicateIndex
) -> None:
    await index.claim("job", "i1", LONG, threshold=0.8)

    rejection = await index.claim("job", "i2", LONG, threshold=0.8)

    assert rejection is not None
    assert (rejection.reason, rejection.text) == ("duplicate", LONG)
    assert rejection.detail == "same text as i1"
    assert len(await claims_of(bus, "job")) == 1, "the first claimant keeps the text"


async def test_a_duplicate_up_to_case_and_punctuation_is_exact(index: DuplicateIndex) -> None:
    await index.claim("job", "i1", LONG, threshold=0)
    variant = "  " + LONG.upper().replace(",", "") + "!!"

    rejection = await index.claim("job", "i2", variant, threshold=0)

    assert rejection is not None
    assert (rejection.reason, rejection.text) == ("duplicate", variant)


async def test_a_near_duplicate_above_the_threshold_is_rejected(index: DuplicateIndex) -> None:
    await index.claim("job", "i1", LONG, threshold=0.6)

    rejection = await index.claim("job", "i2", ONE_WORD_EDIT, threshold=0.6)

    assert rejection is not None
    assert (rejection.reason, rejection.text) == ("near_duplicate", ONE_WORD_EDIT)
    assert rejection.detail.endswith("similar to i1")
    assert 0.6 <= float(rejection.detail.split()[0]) < 1.0


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


async def test_threshold_zero_claims_the_text_alone(bus: Bus, index: DuplicateIndex) -> None:
    assert await index.claim("job", "i1", LONG, threshold=0) is None

    assert await index.claim("job", "i2", ONE_WORD_EDIT, threshold=0) is None
    claims = await claims_of(bus, "job")
    assert sorted(claims.values()) == [b"i1", b"i2"], "no signature without near duplicates"


async def test_other_jobs_do_not_collide(index: DuplicateIndex) -> None:
    await index.claim("job-a", "i1", LONG, threshold=0.8)

    assert await index.claim("job-b", "i2", LONG, threshold=0.8) is None
    assert await index.claim("job-b", "i3", ONE_WORD_EDIT, threshold=0.6) is not None


async def test_a_redelivered_claim_gets_the_same_answer_in_a_new_process(bus: Bus) -> None:
    first = DuplicateIndex(ItemStore(bus))
    assert await first.claim("job", "i1", LONG, threshold=0.6) is None
    assert await first.claim("job", "i2", ONE_WORD_EDIT, threshold=0.6) is not None
    await first.close()

    # A restarted process reads the job's claims afresh: the earlier text still stands, and
    # the later one is still its near duplicate, whichever of them is asked again first.
    again = DuplicateIndex(ItemStore(bus))
    try:
        rejection = await again.claim("job", "i2", ONE_WORD_EDIT, threshold=0.6)
        assert rejection is not None and rejection.detail.endswith("similar to i1")
        assert await again.claim("job", "i1", LONG, threshold=0.6) is None
    finally:
        await again.close()


async def test_replicas_racing_near_duplicates_keep_exactly_one_and_agree(bus: Bus) -> None:
    # Two processes (two connections), 12 items at once, each text one word off the others.
    # First-writer order decides: one passes, and every replica asked again says the same.
    words = [
        "cold",
        "warm",
        "dry",
        "wet",
        "calm",
        "windy",
        "bright",
        "dark",
        "high",
        "low",
        "mild",
        "grey",
    ]
    texts = {f"i{n:02d}": f"{LONG} Answer for a {word} day." for n, word in enumerate(words)}
    other = await Bus.connect(bus.settings, name="replica-2")
    replicas = [DuplicateIndex(ItemStore(bus)), DuplicateIndex(ItemStore(other))]
    try:
        verdicts = await asyncio.gather(
            *(
                replicas[n % 2].claim("race", item, text, threshold=0.6)
                for n, (item, text) in enumerate(texts.items())
            )
        )
        passed = [item for item, v in zip(texts, verdicts, strict=True) if v is None]
        assert len(passed) == 1, verdicts
        for replica in replicas:  # the other replica, and the same one, on redelivery
            again = await asyncio.gather(
                *(replica.claim("race", item, text, threshold=0.6) for item, text in texts.items())
            )
            assert [item for item, v in zip(texts, again, strict=True) if v is None] == passed
    finally:
        for replica in replicas:
            await replica.close()
        await other.close()


async def test_a_follower_that_stops_delivering_fails_the_claim_then_recovers(
    bus: Bus,
) -> None:
    index = DuplicateIndex(ItemStore(bus), catch_up_s=0.5)
    try:
        assert await index.claim("job", "i1", LONG, threshold=0.6) is None
        follower = index._jobs["job"]  # the job's claims as this process reads them
        assert follower.stop is not None
        await follower.stop()  # the subscription is gone: nothing more is read

        with pytest.raises(TransientError, match="not read up to"):
            await index.claim("job", "i2", UNRELATED, threshold=0.6)

        # The retry follows the job afresh and sees every claim, its own included.
        rejection = await index.claim("job", "i3", ONE_WORD_EDIT, threshold=0.6)
        assert rejection is not None and rejection.detail.endswith("similar to i1")
        assert await index.claim("job", "i2", UNRELATED, threshold=0.6) is None
    finally:
        await index.close()
