"""Largest-remainder apportionment, capped (water-filling) as the selector's quotas use it."""

from __future__ import annotations

import pytest

from taxoforge.apportion import capped_largest_remainder, largest_remainder


def test_uncapped_it_is_the_plain_largest_remainder() -> None:
    weights = [1.6, 2.4, 1.0, 0.0]
    assert capped_largest_remainder(weights, [100] * 4, 5) == [2, 2, 1, 0]
    assert largest_remainder(weights, 5) == [2, 2, 1, 0]


def test_a_capped_share_gives_its_surplus_to_the_others() -> None:
    assert capped_largest_remainder([10, 1, 1], [2, 50, 50], 10) == [2, 4, 4]


def test_it_never_gives_more_than_the_caps_hold() -> None:
    assert capped_largest_remainder([1, 1], [1, 2], 10) == [1, 2]


def test_a_zero_weight_or_cap_gets_nothing() -> None:
    assert capped_largest_remainder([0, 1, 1], [5, 0, 5], 4) == [0, 0, 4]


def test_weights_and_caps_must_match() -> None:
    with pytest.raises(ValueError):
        capped_largest_remainder([1, 1], [1], 1)
