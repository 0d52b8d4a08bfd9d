"""CPU seconds of the tag merge (``taxoforge.labels.greedy_merge``) against the all-pairs walk
it replaced, for 1k / 2k / 4k / 16k distinct tags.

The tags' vectors are synthetic unit vectors of the embedder's width (384): groups of
near-synonyms around a few thousand anchors (cosine ~0.92 to one another, so they merge at
the default threshold of 0.85) and a quarter of loners, in random order. Embedding the tags is
not timed here (another benchmark measures the embedder); only the merge is.

"before" is the walk as it was (each tag against every representative before it, with a copy
of their vectors per tag), run up to ``--before-max`` tags since it grows quadratically.

Run: ``.venv/bin/python benchmarks/labels_bench.py`` (``--sizes 1000,2000`` to pick).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from numpy.typing import NDArray

from taxoforge.labels import greedy_merge

DIM = 384


def vectors(n: int, seed: int) -> NDArray[np.float32]:
    """n unit vectors: 3/4 variants of n/8 anchors, 1/4 loners, shuffled."""
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(max(n // 8, 1), DIM)).astype(np.float32)
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    rows = anchors[rng.integers(0, len(anchors), size=n)]
    rows = rows + rng.normal(scale=0.015, size=(n, DIM)).astype(np.float32)
    loners = n // 4
    rows[:loners] = rng.normal(size=(loners, DIM))
    rng.shuffle(rows)
    out: NDArray[np.float32] = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(
        np.float32
    )
    return out


def all_pairs_merge(x: NDArray[np.float32], threshold: float) -> list[int]:
    """The merge before issue 14 (taxoforge/labels.py at 7172c03), as a function."""
    rep_of = list(range(len(x)))
    reps: list[int] = []
    for i in range(len(x)):
        if reps:
            sims = x[reps] @ x[i]
            best = int(np.argmax(sims))
            if float(sims[best]) >= threshold:
                rep_of[i] = reps[best]
                continue
        reps.append(i)
    return rep_of


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", default="1000,2000,4000,16000", help="distinct tags, comma-separated")
    p.add_argument("--before-max", type=int, default=4000, help="largest size run the old way")
    p.add_argument("--threshold", type=float, default=0.85)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    print("tag merge, CPU seconds (process time, all threads) and wall seconds")
    print(
        f"  {'tags':>7} {'before CPU s':>13} {'after CPU s':>12} {'after wall s':>13} {'kept':>7}"
    )
    for n in (int(s) for s in args.sizes.split(",") if s.strip()):
        x = vectors(n, args.seed)
        before = "-"
        expected: list[int] | None = None
        if n <= args.before_max:
            c0 = time.process_time()
            expected = all_pairs_merge(x, args.threshold)
            before = f"{time.process_time() - c0:.2f}"
        c0, w0 = time.process_time(), time.perf_counter()
        got = greedy_merge(x, args.threshold).tolist()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if expected is not None and got != expected:
            print(f"  {n}: the new merge differs from the old one", file=sys.stderr)
            return 1
        kept = sum(1 for i, r in enumerate(got) if i == r)
        print(f"  {n:>7,} {before:>13} {cpu:>12.2f} {wall:>13.2f} {kept:>7,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
