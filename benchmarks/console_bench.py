"""The console's records page on a large job: index build time and one page's render time.

Writes a synthetic finished job's files (``--rows`` records: kept ones in
``meta/provenance.jsonl`` with their texts in ``data/sft.jsonl`` and ``data/preference.jsonl``,
a fifth of them dropped in ``meta/dropped.jsonl``), builds the records index the console
builds (``gateway.ui.index.build_index``), then times what ``GET /ui/jobs/{id}/records``
does for a page: the filtered query, the facets, and the template render, for several
filters and a deep page. Target: a page in under 1 s at 100k records.

Run: ``.venv/bin/python benchmarks/console_bench.py --rows 100000``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request

from gateway.ui.index import RecordFilter, RecordIndex, build_index
from gateway.ui.render import render

NODES = [f"field-{i}/subject-{j}" for i in range(12) for j in range(8)]
LANGUAGES = ["en", "fr", "de", "es"]
DIFFICULTIES = ["easy", "medium", "hard"]
REASONS = ["not_selected", "duplicate", "near_duplicate", "unusable", "failed"]


def write_job(folder: Path, rows: int, seed: int = 1) -> dict[str, Path]:
    """A finished job's record files with ``rows`` items."""
    rng = random.Random(seed)
    paths = {
        name: folder / f"{name}.jsonl" for name in ("provenance", "dropped", "sft", "preference")
    }
    handles = {name: path.open("w") for name, path in paths.items()}
    try:
        for n in range(rows):
            item = f"i{n:07d}"
            base = {
                "id": f"j-bench/{item}",
                "item_id": item,
                "node": rng.choice(NODES),
                "language": rng.choice(LANGUAGES),
                "difficulty": rng.choice(DIFFICULTIES),
            }
            if n % 5 == 4:
                reason = rng.choice(REASONS)
                drop = {**base, "stage": "select", "reason": reason, "detail": "bench"}
                handles["dropped"].write(json.dumps(drop) + "\n")
                continue
            question = f"Question {n} about {base['node']}: " + "why? " * 20
            score = round(rng.uniform(10, 100), 1)
            cluster = rng.randrange(64)
            provenance = {
                **base,
                "shape": "generated",
                "kept": "tacos: within its cluster's quota",
                "judge_score": score,
                "quality": score,
                "cluster": cluster,
                "cluster_label": f"cluster {cluster}",
                "tags": ["bench"],
                "tokens": 120,
                "metadata": {
                    "strategy": "glan",
                    "instruction_template": "glan@3",
                    "verdicts": {"mode": "pairwise", "scores": [], "comparisons": []},
                },
            }
            handles["provenance"].write(json.dumps(provenance) + "\n")
            messages = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": "Because. " * 60},
            ]
            handles["sft"].write(json.dumps({"id": base["id"], "messages": messages}) + "\n")
            if n % 2 == 0:
                pair = {
                    "id": base["id"],
                    "prompt": messages[:1],
                    "chosen": messages[1:],
                    "rejected": [{"role": "assistant", "content": "No."}],
                    "score_chosen": 8.0,
                    "score_rejected": 3.0,
                }
                handles["preference"].write(json.dumps(pair) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return paths


def _request() -> Request:
    app = FastAPI()
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/ui/jobs/j-bench/records",
        "query_string": b"",
        "headers": [],
        "app": app,
    }
    return Request(scope)


def render_page(index: RecordIndex, wanted: RecordFilter, page: int) -> int:
    """What the records route does for one page; returns the HTML's size."""
    result = index.page(wanted, page, 50)
    facets = index.facets()
    query = {
        "node": wanted.node,
        "language": wanted.language,
        "difficulty": wanted.difficulty,
        "cluster": wanted.cluster,
        "status": wanted.status,
        "reason": wanted.reason,
        "score_min": wanted.score_min or "",
        "score_max": wanted.score_max or "",
    }
    response = render(
        _request(),
        "records.html",
        job_id="j-bench",
        job_name="bench",
        result=result,
        facets=facets,
        query=query,
        previous_url=None,
        next_url="/ui/jobs/j-bench/records?page=2",
    )
    return len(response.body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        paths = write_job(folder, args.rows)
        written = time.perf_counter() - started
        dest = folder / "index.sqlite"
        started = time.perf_counter()
        build_index(dest, paths["provenance"], paths["dropped"], paths["sft"], paths["preference"])
        built = time.perf_counter() - started
        index = RecordIndex(dest)
        megabytes = dest.stat().st_size / 1e6
        print(f"rows {args.rows:,}: files written in {written:.2f} s")
        print(f"index built in {built:.2f} s ({megabytes:.1f} MB)")
        cases = [
            ("no filter, page 1", RecordFilter(), 1),
            ("no filter, last page", RecordFilter(), max(1, args.rows // 50)),
            ("dropped, reason=duplicate", RecordFilter(status="dropped", reason="duplicate"), 1),
            (
                "node+language+score 40-60",
                RecordFilter(node=NODES[5], language="fr", score_min=40, score_max=60),
                1,
            ),
            ("score >= 95, page 20", RecordFilter(score_min=95), 20),
            ("cluster 'cluster 7', page 5", RecordFilter(cluster="cluster 7"), 5),
        ]
        worst = 0.0
        for name, wanted, page in cases:
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                size = render_page(index, wanted, page)
                times.append(time.perf_counter() - started)
            median = statistics.median(times)
            worst = max(worst, max(times))
            print(
                f"page render {name}: median {median * 1000:.1f} ms, "
                f"max {max(times) * 1000:.1f} ms ({size:,} bytes)"
            )
        print(f"slowest page render: {worst * 1000:.1f} ms (target < 1000 ms)")


if __name__ == "__main__":
    main()
