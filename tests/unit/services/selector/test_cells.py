"""Selection keeps the plan's shape, and says why a cell ends short after generation filled it."""

from __future__ import annotations

from services.selector.cells import (
    REMOVED_AT_SELECTION,
    count_delivered,
    fit_cells,
    item_cell,
    quotas_of,
)
from services.selector.examples import Candidate
from taxoforge.composition import cell_key
from taxoforge.v1 import common_pb2 as pb

_EN = cell_key("physics", "en", "easy", "")
_FR = cell_key("physics", "fr", "easy", "")


def _cand(i: int, cell: str, pair: bool = True) -> Candidate:
    return Candidate(
        item_id=f"i{i}",
        query=f"q{i}",
        response_chars=len(f"a{i}"),
        tokens=10,
        cell=cell,
        has_preference=pair,
    )


def _composition(en_delivered: int, fr_delivered: int) -> pb.Composition:
    return pb.Composition(
        preference_promised=True,
        cells=[
            pb.CellCount(
                node_id="physics",
                language="en",
                difficulty="easy",
                planned=3,
                sft=en_delivered,
                preference=en_delivered,
            ),
            pb.CellCount(
                node_id="physics",
                language="fr",
                difficulty="easy",
                planned=2,
                sft=fr_delivered,
                preference=fr_delivered,
            ),
        ],
    )


def test_each_cell_keeps_its_quota_pairs_first() -> None:
    cands = [_cand(0, _EN, pair=False), _cand(1, _EN), _cand(2, _EN), _cand(3, _EN), _cand(4, _FR)]
    kept, left = fit_cells([], cands, quotas_of(_composition(4, 1)), promised=True)

    assert sorted(kept) == [1, 2, 3, 4]
    assert left == {0: "its plan cell is full (3 records)"}


def test_records_removed_by_selection_are_named_as_the_short_cells_reason() -> None:
    # Generation delivered 3 English records; one was a duplicate the prepare step dropped.
    composition = _composition(3, 2)
    cands = [_cand(0, _EN), _cand(1, _EN), _cand(2, _FR), _cand(3, _FR)]
    kept, _ = fit_cells([], cands, quotas_of(composition), promised=True)

    count_delivered(composition, kept, cands)

    en, fr = composition.cells
    assert (en.sft, en.preference) == (2, 2)
    assert dict(en.reasons) == {REMOVED_AT_SELECTION: 1}
    assert (fr.sft, fr.preference) == (2, 2) and not fr.reasons
    assert composition.short and composition.sft == 4


def test_a_cell_generation_left_short_gets_no_selection_reason() -> None:
    composition = _composition(2, 2)
    cands = [_cand(0, _EN), _cand(1, _EN), _cand(2, _FR), _cand(3, _FR)]
    kept, _ = fit_cells([], cands, quotas_of(composition), promised=True)

    count_delivered(composition, kept, cands)

    assert REMOVED_AT_SELECTION not in composition.cells[0].reasons


def test_an_items_cell_is_named_from_the_reviews_item_cells() -> None:
    composition = _composition(3, 2)
    composition.cells[1].node_path = "Natural Sciences > Physics"
    composition.item_cells.extend([0, 1, -1])

    assert item_cell(composition, "i0000001") == {
        "node": "Natural Sciences > Physics",
        "node_id": "physics",
        "language": "fr",
        "difficulty": "easy",
    }
    assert item_cell(composition, "i0000000")["language"] == "en"
    # An item of no cell, beyond the plan, an imported row, or no composition: nothing named.
    assert item_cell(composition, "i0000002") == {}
    assert item_cell(composition, "i0000009") == {}
    assert item_cell(composition, "r0000001") == {}
    assert item_cell(None, "i0000001") == {}
