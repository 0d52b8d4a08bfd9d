"""How far a job overshoots its tenant's spend limit, against the FAKE model server.

A tenant's job limit stops a job once it has spent that many tokens; model calls already in
flight when the limit is reached still finish. This script runs one generation job per
worker concurrency on a stack with API keys on, and prints what the job spent against its
limit, the calls made, and the items finished.

Run: ``.venv/bin/python benchmarks/spend_bench.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
from common import TERMINAL

from taxoforge.keys import hash_key, new_key
from taxoforge_cli.stack import Stack, StackConfig


def run(concurrency: int, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    key = new_key()
    tenant = {"name": "bench", "keys": [hash_key(key)], "job_limit": {"tokens": args.limit}}
    tenants = folder / f"tenants-{concurrency}.yaml"
    tenants.write_text(json.dumps({"tenants": [tenant]}))
    env = {
        "TAXOFORGE_AUTH": "keys",
        "TAXOFORGE_TENANTS_FILE": str(tenants),
        "TAXOFORGE_WORKER_CONCURRENCY": str(concurrency),
        "TAXOFORGE_LLM_RETRIES": "0",
    }
    config = StackConfig(
        data_dir=folder / f"stack-{concurrency}",
        llm="fake",
        sync_always=False,
        fake_latency_ms=args.latency_ms,
        env=env,
    )
    headers = {"Authorization": f"Bearer {key}"}
    with (
        Stack(config) as stack,
        httpx.Client(base_url=stack.gateway_url, timeout=30, headers=headers) as api,
    ):
        resp = api.post("/v1/jobs", json={"count": args.count, "seed": 3})
        resp.raise_for_status()
        job_id = resp.json()["id"]
        deadline = time.monotonic() + args.timeout_s
        job = resp.json()
        while job["state"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} still {job['state']} after {args.timeout_s} s")
            time.sleep(0.2)
            job = api.get(f"/v1/jobs/{job_id}").json()
        time.sleep(2.0)  # every process has written its usage by then
        final = api.get(f"/v1/jobs/{job_id}").json()
    usage = final["usage"]
    used = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "concurrency": concurrency,
        "state": final["state"],
        "tokens": used,
        "ratio": used / args.limit,
        "calls": usage["calls"],
        "finished": final["finished"],
        "error": final.get("error"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=3000, help="the tenant's job limit in tokens")
    p.add_argument("--count", type=int, default=60, help="instructions the job asks for")
    p.add_argument("--latency-ms", type=float, default=200.0, help="the fake's delay per call")
    p.add_argument(
        "--concurrency", default="4,32", help="TAXOFORGE_WORKER_CONCURRENCY values, one run each"
    )
    p.add_argument("--timeout-s", type=float, default=300.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="taxoforge-spend-bench-") as tmp:
        rows = [run(int(c), args, Path(tmp)) for c in args.concurrency.split(",")]
    print(
        f"spend limit {args.limit:,} tokens; job of {args.count} instructions; "
        f"fake model at {args.latency_ms:g} ms per call"
    )
    print(f"  {'in flight':>9} {'state':>9} {'tokens':>8} {'x limit':>8} {'calls':>6} {'items':>6}")
    for r in rows:
        print(
            f"  {r['concurrency']:>9} {r['state']:>9} {r['tokens']:>8,} {r['ratio']:>8.2f} "
            f"{r['calls']:>6} {r['finished']:>6}"
        )
    print("  (in flight: messages per service process; items: finished before the stop)")


if __name__ == "__main__":
    main()
