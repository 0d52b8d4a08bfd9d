"""A selector replica pays its steps' one-time costs at startup, not in its first job's select
step: the token table, the charts' library and the Parquet tables' imports."""

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


def test_startup_loads_what_a_first_job_would() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "[] ['matplotlib.figure', 'pandas'] 1"
