"""Parquet page headers: every page of a file measured before any is unpacked."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.selector.parquet_pages import PageFormatError, page_sizes


def _table() -> pa.Table:
    rng = random.Random(3)
    return pa.Table.from_pylist(
        [
            {
                "messages": [
                    {"role": "user", "content": "q" * rng.randint(1, 3000)},
                    {"role": "assistant", "content": str(i)},
                ],
                "id": i,
                "score": rng.random(),
                "flag": i % 2 == 0,
                "tags": ["a", "b"] if i % 3 else None,
                "meta": {"k": i},
            }
            for i in range(5000)
        ]
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "zstd"},
        {"compression": "gzip", "data_page_version": "2.0"},
        {"use_dictionary": False, "write_statistics": False},
        {"compression": "none", "row_group_size": 700, "data_page_size": 1 << 14},
        {"write_page_index": True, "compression": "lz4"},
    ],
)
def test_the_pages_add_up_to_what_the_footer_declares(tmp_path: Path, options: Any) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(_table(), path, **options)
    meta = pq.ParquetFile(path).metadata
    declared = sum(
        meta.row_group(g).column(c).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    )

    sizes = page_sizes(path, meta)

    # The footer counts the page headers too; the pages alone are a little less.
    assert 0.99 * declared < sizes.unpacked <= declared
    assert 0 < sizes.largest <= sizes.unpacked
    assert "row group" in sizes.where


@pytest.mark.parametrize(
    ("dictionary", "weight", "page"), [(False, 1, "a page"), (True, 2, "a dictionary page")]
)
def test_the_heaviest_page_is_found_where_it_is(
    tmp_path: Path, dictionary: bool, weight: int, page: str
) -> None:
    rows = [{"a": "x", "b": "y"} for _ in range(10)]
    rows[7]["b"] = "z" * 3_000_000
    path = tmp_path / "rows.parquet"
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, path, row_group_size=5, compression="zstd", use_dictionary=dictionary)

    sizes = page_sizes(path, pq.ParquetFile(path).metadata)

    # A dictionary page weighs twice its size: a reader holds it decoded beside the page.
    assert weight * 3_000_000 < sizes.largest < weight * 3_100_000
    assert sizes.where == f"{page} of column 'b' of row group 2"
    assert 3_000_000 < sizes.unpacked < 3_100_000


def test_a_corrupt_page_header_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(_table(), path)
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    start = meta.row_group(0).column(1).data_page_offset
    data[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))

    with pytest.raises(PageFormatError):
        page_sizes(path, meta)
