"""A selector replica loads the token table at startup, not in its first job's prepare step,
and nothing that would only raise its peak memory (the charts' library, pandas)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from services.selector import app
    from taxoforge import tokens

    lazy = ("matplotlib.figure", "pandas")
    before = [m for m in lazy if m in sys.modules]
    assert tokens._encoding.cache_info().currsize == 0
    asyncio.run(app.load_ahead(asyncio.Event()))
    after = [m for m in lazy if m in sys.modules]
    print(before, after, tokens._encoding.cache_info().currsize)
    """
)


def test_startup_loads_the_token_table_and_nothing_heavier() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "[] [] 1"
