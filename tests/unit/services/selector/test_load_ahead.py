"""A selector replica loads the token table at startup, not in its first job's prepare step,
and nothing that would only raise its peak memory (pandas); neither it
nor a screening worker loads datasketch (and with it scipy's integrate and optimize, ~57 MiB a
process), which only the generator's duplicate index uses."""

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

    lazy = ("pandas", "datasketch", "scipy.integrate")
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


WORKER_PROBE = textwrap.dedent(
    """
    import sys
    from services.selector import screening

    screening._init_worker((0.8, "record"), None, True)
    messages = [
        {"role": "user", "content": "a question about rivers"},
        {"role": "assistant", "content": "an answer about rivers"},
    ]
    example = {
        "item_id": "r1",
        "query": "a question about rivers",
        "response": "an answer about rivers",
        "messages": messages,
        "tokens": -1,
    }
    screening._check([example])
    print([m for m in ("datasketch", "scipy.integrate") if m in sys.modules])
    """
)


def test_a_screening_worker_loads_no_datasketch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "[]"


def test_the_generator_loads_datasketch_with_its_duplicate_index() -> None:
    probe = (
        "import sys; from taxoforge.dedupe import DuplicateIndex; "
        "print('datasketch' in sys.modules); DuplicateIndex(None); "
        "print('datasketch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True"]
