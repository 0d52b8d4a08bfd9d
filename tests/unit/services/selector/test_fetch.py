"""A URL import's guarded fetch refuses private hosts without touching the network, and the
local copy is named safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.selector.fetch import fetch_url, local_name
from taxoforge.errors import PermanentError


async def test_a_private_address_is_refused_with_how_to_allow_it(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="TAXOFORGE_IMPORT_PRIVATE_URLS"):
        await fetch_url("http://127.0.0.1:9/data.jsonl", tmp_path / "x", 1000, private_ok=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("https://example.com/a/b/train.jsonl?token=x", "train.jsonl"),
        ("../../etc/passwd", "passwd"),
        ("my data (1).parquet", "my_data__1_.parquet"),
        ("...", "source"),
        ("", "source"),
    ],
)
def test_the_local_copy_is_named_after_the_last_safe_part(name: str, local: str) -> None:
    assert local_name(name) == local
