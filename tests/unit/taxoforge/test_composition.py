"""Top-up sizing and cell quotas: short cells ask for what they lack over their success rate,
a spent budget is shared by need, and a cell never gets more than its target."""

from __future__ import annotations

from taxoforge.composition import (
    CellTally,
    candidate_budget,
    delivers,
    preference_promised,
    top_up,
)
from taxoforge.v1 import common_pb2 as pb


def test_a_full_cell_asks_nothing_and_a_short_one_asks_over_its_rate() -> None:
    full = CellTally(target=4, tried=4, sft=4, preference=4)
    short = CellTally(target=4, tried=5, sft=3, preference=2)  # 2 of 5 delivered both
    asks, cut = top_up([full, short], promised=True, available=100)
    assert asks == [0, 5] and not cut  # lacks 2, rate 0.4: 2 / 0.4
    asks, _ = top_up([full, short], promised=False, available=100)
    assert asks == [0, 2]  # lacks 1 SFT record, rate 0.6: ceil(1.67)


def test_a_cell_that_never_delivered_is_not_given_the_whole_budget() -> None:
    dead = CellTally(target=2, tried=8)
    asks, _ = top_up([dead], promised=False, available=100)
    assert asks == [8]  # 2 / the floor rate 0.25


def test_a_short_budget_is_shared_by_need() -> None:
    a = CellTally(target=6, tried=6, sft=0)
    b = CellTally(target=2, tried=2, sft=0)
    asks, cut = top_up([a, b], promised=False, available=4)
    assert cut and sum(asks) == 4 and asks == [3, 1]
    assert top_up([a, b], promised=False, available=0) == ([0, 0], True)


def test_what_a_judgment_delivers() -> None:
    judgment = pb.Judgment(usable=True)
    judgment.responses.add(id="r0", text="An answer.")
    judgment.scores.add(response_id="r0", score=8)
    assert delivers(judgment) == (True, False)
    judgment.pair.chosen_id = "r0"
    assert delivers(judgment) == (True, True)
    judgment.usable = False
    assert delivers(judgment) == (False, False)
    empty = pb.Judgment(usable=True)
    empty.responses.add(id="r0", text="  ")
    empty.scores.add(response_id="r0", score=8)
    assert delivers(empty) == (False, False)


def test_the_candidate_budget_and_promised_datasets() -> None:
    assert candidate_budget(pb.Recipe(count=10)) == 20
    assert candidate_budget(pb.Recipe(count=10, max_candidates=1.0)) == 10
    assert preference_promised([]) and preference_promised(["sft", "openai-dpo"])
    assert not preference_promised(["sft", "alpaca"])
