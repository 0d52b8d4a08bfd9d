"""Pipeline throughput against the FAKE OpenAI-compatible server, beside bare clients.

Starts the whole suite (nats-server, the FAKE model server, taxonomy, generator, judge,
selector, gateway) as local processes, runs one job of ``--count`` instructions ->
``--responses`` responses each -> one judgment per response, and reports LLM calls per second
and CPU seconds per call. Then, with the stack idle, it makes the same number of calls to the
same fake server process from this process with a bare aiohttp client, with the project's
``LLMClient`` over its HTTP transport, and with ``LLMClient`` over litellm.

The fake calls no model: it answers after ``--latency-ms``. With ``--inflight`` calls in flight
the ideal rate is inflight / latency (2,560 calls/s for 256 calls at 100 ms).

Run: ``.venv/bin/python benchmarks/pipeline_bench.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from common import (
    TERMINAL,
    BenchError,
    FakeControl,
    StackRun,
    cpu_seconds,
    dead_processes,
    fake_stack,
    nats_messages,
    print_tails,
    speed_probe,
    stack_cpu,
)
from pydantic import SecretStr

from taxoforge.llm import LLMClient
from taxoforge.settings import LLMSettings
from taxoforge.v1 import common_pb2 as pb
from taxoforge_cli.stack import Stack

FAKE_PROC = "llm"  # the Stack's name for the model server process (here: the fake)
LITELLM_MAX_CALLS = 2000
# Every baseline sends the same small chat request (the fake answers it with a short text).
MESSAGES = [{"role": "user", "content": "Say something short about benchmarks."}]
MAX_TOKENS = 16
TEMPERATURE = 0.7


@dataclass
class Row:
    """One line of the results table."""

    name: str
    calls: int
    wall_s: float
    cpu_s: float  # client side: the stack without the fake, or this process for baselines
    fake_cpu_s: float
    fake_max_inflight: int
    ideal_calls_per_s: float
    note: str = ""

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_per_call(self) -> float:
        return self.cpu_s / self.calls if self.calls else 0.0

    @property
    def fake_cpu_per_call(self) -> float:
        return self.fake_cpu_s / self.calls if self.calls else 0.0

    @property
    def ratio_to_ideal(self) -> float:
        return self.calls_per_s / self.ideal_calls_per_s if self.ideal_calls_per_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "calls_per_s": round(self.calls_per_s, 1),
            "cpu_s_per_call": round(self.cpu_per_call, 6),
            "fake_cpu_s_per_call": round(self.fake_cpu_per_call, 6),
            "ratio_to_ideal": round(self.ratio_to_ideal, 3),
        }


@dataclass
class PipelineResult:
    """The whole-suite run: its table row and what stands behind it."""

    row: Row
    job: dict[str, Any]
    expected_calls: int
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    server_wall_s: float | None = None
    # When a poll first saw every item through the judge stage (its LLM calls all made).
    judged_s: float | None = None
    items: ItemAccount | None = None
    # Messages each connection sent to / received from nats-server during the job, by name.
    nats_messages: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemAccount:
    """Where each planned item ended: in the exports (``meta/provenance.jsonl``) or in
    ``meta/dropped.jsonl``, each exactly once."""

    planned: int
    exported: int
    dropped: int
    # Item ids listed twice (in one file, or in both).
    duplicated: list[str]
    # Planned items in neither file.
    lost: int

    @property
    def ok(self) -> bool:
        return not self.duplicated and self.lost == 0 and self.exported + self.dropped > 0


def _item_ids(api: httpx.Client, job_id: str, path: str) -> list[str]:
    """The item ids of a job's JSONL side file, one per item's own line (none when it has no
    such file). A line naming a ``candidate`` is a draft or candidate response the gates
    turned down, not its item's end: the item's own line is elsewhere."""
    resp = api.get(f"/v1/jobs/{job_id}/files/{path}")
    if resp.status_code == 404:
        return []
    if resp.status_code != 200:
        raise BenchError(f"GET {path} answered {resp.status_code}: {resp.text[:200]}")
    lines = (json.loads(line) for line in resp.text.splitlines() if line.strip())
    return [str(line["item_id"]) for line in lines if "candidate" not in line]


def account_items(api: httpx.Client, job: dict[str, Any]) -> ItemAccount:
    """No loss and no duplicate: every planned item exported or dropped, and only once."""
    exported = _item_ids(api, job["id"], "meta/provenance.jsonl")
    dropped = _item_ids(api, job["id"], "meta/dropped.jsonl")
    seen: dict[str, int] = {}
    for item_id in exported + dropped:
        seen[item_id] = seen.get(item_id, 0) + 1
    planned = int(job["planned"])
    return ItemAccount(
        planned=planned,
        exported=len(exported),
        dropped=len(dropped),
        duplicated=sorted(i for i, n in seen.items() if n > 1),
        lost=max(0, planned - len(seen)),
    )


# ---- the fake's control endpoints ----


# ---- the pipeline ----


def _job_seconds(job: dict[str, Any]) -> float | None:
    """Server-side job duration: created_at to finished_at."""
    start, end = job.get("created_at"), job.get("finished_at")
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _stage_counts(job: dict[str, Any]) -> str:
    return " ".join(f"{s['stage']}={s['done']}/{s['failed']}f" for s in job.get("stages", []))


def _stage_total(job: dict[str, Any], stage: str) -> int:
    """Items a stage has finished, done or failed."""
    return sum(s["done"] + s["failed"] for s in job.get("stages", []) if s["stage"] == stage)


def run_pipeline(
    stack: Stack, fake: FakeControl, args: argparse.Namespace, ideal: float
) -> PipelineResult:
    """Submit one job through the gateway and wait for it; CPU of every process around it."""
    k = args.responses
    expected = args.count * (1 + 2 * k)
    recipe = {
        "name": "bench",
        "count": args.count,
        "responses_per_instruction": k,
        "languages": ["en"],
        # The calls per item are fixed: no replacement seeds for pairs the fake judge ties.
        "max_candidates": 1.0,
    }
    fake.reset()
    fake_pid = stack.procs[FAKE_PROC].pid
    cpu_before = stack_cpu(stack)
    messages_before = nats_messages(stack)
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as api:
        started = time.perf_counter()
        resp = api.post("/v1/jobs", json=recipe)
        if resp.status_code != 201:
            raise BenchError(f"POST /v1/jobs answered {resp.status_code}: {resp.text}")
        job: dict[str, Any] = resp.json()
        job_id = job["id"]
        last_report = started
        judged_s: float | None = None
        while job["state"] not in TERMINAL:
            time.sleep(0.5)
            now = time.perf_counter()
            dead = dead_processes(stack)
            if dead:
                raise BenchError(f"processes died during the job: {', '.join(dead)}")
            if now - started > args.timeout_s:
                raise BenchError(
                    f"job {job_id} still {job['state']} after {args.timeout_s:.0f}s: "
                    f"{_stage_counts(job)}; fake {fake.stats()}"
                )
            job = api.get(f"/v1/jobs/{job_id}").json()
            if judged_s is None and _stage_total(job, "judge") >= args.count:
                judged_s = time.perf_counter() - started
            if now - last_report >= 10:
                last_report = now
                print(
                    f"  ... {now - started:5.0f}s {job['state']}: {_stage_counts(job)}",
                    file=sys.stderr,
                    flush=True,
                )
        wall = time.perf_counter() - started
        cpu_after = stack_cpu(stack)
        messages_after = nats_messages(stack)
        items = account_items(api, job) if job["state"] == "succeeded" else None
    stats = fake.stats()
    cpu = {
        name: cpu_after[name] - cpu_before.get(name, 0.0)
        for name in cpu_after
        if name in cpu_before
    }
    fake_cpu = cpu.pop(FAKE_PROC, 0.0)
    note = f"fake pid {fake_pid}"
    if job["state"] != "succeeded":
        note = f"job {job['state']}: {job.get('error')}"
    row = Row(
        name="pipeline (whole suite)",
        calls=int(stats["calls"]),
        wall_s=wall,
        cpu_s=sum(cpu.values()),
        fake_cpu_s=fake_cpu,
        fake_max_inflight=int(stats["max_inflight"]),
        ideal_calls_per_s=ideal,
        note=note,
    )
    return PipelineResult(
        row=row,
        job=job,
        expected_calls=expected,
        cpu_by_process={**cpu, FAKE_PROC: fake_cpu},
        server_wall_s=_job_seconds(job),
        judged_s=judged_s,
        items=items,
        nats_messages={
            name: (
                sent - messages_before.get(name, (0, 0))[0],
                got - messages_before.get(name, (0, 0))[1],
            )
            for name, (sent, got) in messages_after.items()
        },
    )


# ---- baselines (in this process, against the same fake) ----


@dataclass(frozen=True)
class Baseline:
    """How every baseline is measured: calls, how many at once, and the fake that serves them
    (its process, for its CPU) with the ideal rate its latency allows."""

    calls: int
    inflight: int
    fake: FakeControl
    fake_pid: int
    ideal: float


async def _timed(
    name: str, one: Callable[[], Awaitable[None]], run: Baseline, calls: int, note: str = ""
) -> Row:
    """Warm up with ``run.inflight`` calls, then time ``calls`` calls, at most ``inflight`` at
    once."""
    sem = asyncio.Semaphore(run.inflight)

    async def bounded() -> None:
        async with sem:
            await one()

    await asyncio.gather(*(bounded() for _ in range(min(run.inflight, calls))))  # pool, imports
    await asyncio.to_thread(run.fake.reset)
    fake_before = cpu_seconds(run.fake_pid) or 0.0
    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(bounded() for _ in range(calls)))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    fake_cpu = (cpu_seconds(run.fake_pid) or 0.0) - fake_before
    stats = await asyncio.to_thread(run.fake.stats)
    if int(stats["calls"]) != calls:
        note = f"{note}; fake counted {stats['calls']} calls".lstrip("; ")
    return Row(
        name=name,
        calls=calls,
        wall_s=wall,
        cpu_s=cpu,
        fake_cpu_s=fake_cpu,
        fake_max_inflight=int(stats["max_inflight"]),
        ideal_calls_per_s=run.ideal,
        note=note,
    )


async def bare_aiohttp(api_base: str, run: Baseline) -> Row:
    """The floor: one aiohttp session, a semaphore, POST and read."""
    url = f"{api_base.rstrip('/')}/chat/completions"
    body = {
        "model": "fake",
        "messages": MESSAGES,
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
    }
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            async with session.post(url, json=body) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise BenchError(f"fake answered {resp.status}: {data[:200]!r}")
                json.loads(data)

        return await _timed("bare aiohttp", one, run, run.calls)


async def llm_client(
    name: str, settings: LLMSettings, run: Baseline, calls: int, note: str = ""
) -> Row:
    """The project's LLMClient.complete() (its settings' "default" model is the fake),
    limited by its own per-model semaphore."""
    client = LLMClient(settings)
    cfg = pb.ModelConfig(model="default", temperature=TEMPERATURE, max_tokens=MAX_TOKENS)

    async def one() -> None:
        await client.complete("bench", cfg, MESSAGES)

    try:
        return await _timed(name, one, run, calls, note)
    finally:
        await client.close()


async def run_baselines(api_base: str, run: Baseline) -> list[Row]:
    rows = [await bare_aiohttp(api_base, run)]
    common: dict[str, Any] = {
        "model": "openai/fake",
        "api_base": api_base,
        "api_key": SecretStr("x"),
        "max_concurrency": run.inflight,
        "retries": 0,
    }
    http = LLMSettings(transport="http", **common)
    rows.append(await llm_client("LLMClient http", http, run, run.calls))
    lite_calls = min(run.calls, LITELLM_MAX_CALLS)
    note = f"limited to {lite_calls} calls" if lite_calls < run.calls else ""
    lite = LLMSettings(transport="litellm", **common)
    rows.append(await llm_client("LLMClient litellm", lite, run, lite_calls, note))
    return rows


# ---- output ----


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'run':<24} {'calls':>6} {'wall s':>7} {'calls/s':>8} {'CPU s/call':>11} "
        f"{'ideal/s':>8} {'ratio':>6} {'fake maxinfl':>12} {'fake CPU s/call':>16}  note"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.name:<24} {r.calls:>6} {r.wall_s:>7.2f} {r.calls_per_s:>8.1f} "
            f"{r.cpu_per_call:>11.6f} {r.ideal_calls_per_s:>8.0f} {r.ratio_to_ideal:>6.3f} "
            f"{r.fake_max_inflight:>12} {r.fake_cpu_per_call:>16.6f}  {r.note}"
        )


def print_breakdown(result: PipelineResult, pids: dict[str, int]) -> None:
    calls = result.row.calls or 1
    wall = result.row.wall_s
    total = result.row.cpu_s
    print(
        f"{'process':<12} {'pid':>8} {'CPU s':>8} {'CPU s/call':>11} {'% of suite':>10} "
        f"{'avg cores':>9}"
    )
    ordered = sorted(
        (kv for kv in result.cpu_by_process.items() if kv[0] != FAKE_PROC),
        key=lambda kv: -kv[1],
    )
    for name, cpu in ordered:
        print(
            f"{name:<12} {pids.get(name, 0):>8} {cpu:>8.2f} {cpu / calls:>11.6f} "
            f"{100 * cpu / total if total else 0:>9.1f}% {cpu / wall:>9.2f}"
        )
    print(
        f"{'suite total':<12} {'':>8} {total:>8.2f} {total / calls:>11.6f} {100.0:>9.1f}% "
        f"{total / wall:>9.2f}"
    )
    fake_cpu = result.cpu_by_process.get(FAKE_PROC, 0.0)
    print(
        f"{'fake (excl.)':<12} {pids.get(FAKE_PROC, 0):>8} {fake_cpu:>8.2f} "
        f"{fake_cpu / calls:>11.6f} {'':>10} {fake_cpu / wall:>9.2f}"
    )
    if result.nats_messages:
        print()
        print("NATS messages a model call, by connection (sent to / received from nats-server):")
        for name, (sent, got) in sorted(result.nats_messages.items(), key=lambda kv: -sum(kv[1])):
            if sent or got:
                print(f"{name:<22} {sent / calls:>8.2f} sent {got / calls:>8.2f} received")
        sent = sum(v[0] for v in result.nats_messages.values())
        got = sum(v[1] for v in result.nats_messages.values())
        print(f"{'all':<22} {sent / calls:>8.2f} sent {got / calls:>8.2f} received")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=1000, help="instructions in the job (1000)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="fake reply delay (100)")
    p.add_argument("--inflight", type=int, default=256, help="LLM calls in flight (256)")
    p.add_argument("--responses", type=int, default=2, help="responses per instruction (2)")
    p.add_argument("--skip-baselines", action="store_true", help="only the pipeline")
    p.add_argument(
        "--generators",
        type=int,
        default=1,
        help="generator replicas, sharing the generator's half of --inflight (1)",
    )
    p.add_argument("--json", action="store_true", help="also print a one-line JSON summary")
    p.add_argument(
        "--log-level",
        default=None,
        help="TAXOFORGE_LOG_LEVEL for the services and gateway (default: theirs, info)",
    )
    p.add_argument("--timeout-s", type=float, default=1800.0, help="give up on the job (1800)")
    p.add_argument("--keep", action="store_true", help="keep the data dir (logs) afterwards")
    args = p.parse_args(argv)
    if args.responses < 2:
        p.error("--responses must be at least 2 (the recipe's minimum)")
    if args.count < 1 or args.inflight < 1 or args.latency_ms <= 0:
        p.error("--count and --inflight must be >= 1 and --latency-ms > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    k = args.responses
    inflight = args.inflight
    ideal = inflight / (args.latency_ms / 1000.0)
    # The model server should see at most `inflight` calls at once, from the two processes that
    # call it: each gets half (TAXOFORGE_LLM_MAX_CONCURRENCY caps calls per process and model).
    # Enough messages per process keep its half busy: the judge makes k calls per message.
    per_process = max(1, inflight // 2)
    # With --generators N, the generator's half is split between its N replicas.
    generators = args.generators
    per_generator = max(1, per_process // generators)
    concurrency = {"generator": per_generator, "judge": math.ceil(per_process / k)}
    data_dir = Path(tempfile.mkdtemp(prefix="taxoforge-bench-"))
    stack = fake_stack(
        data_dir,
        latency_ms=args.latency_ms,
        log_level=args.log_level,
        env={"TAXOFORGE_LLM_MAX_CONCURRENCY": str(per_process)},
        service_env={
            "generator": {
                "TAXOFORGE_WORKER_CONCURRENCY": str(per_generator),
                "TAXOFORGE_LLM_MAX_CONCURRENCY": str(per_generator),
            },
            "judge": {"TAXOFORGE_WORKER_CONCURRENCY": str(concurrency["judge"])},
        },
    )
    print("taxoforge pipeline benchmark (against the FAKE OpenAI-compatible server)")
    print(
        f"  machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    probe_ms = speed_probe()
    print(f"  speed probe: {probe_ms:.0f} ms (a fixed pure-Python workload; lower is quicker)")
    print(
        f"  job: {args.count} instructions x {k} responses + {k} judgments each = "
        f"{args.count * (1 + 2 * k)} LLM calls, languages=[en]"
    )
    print(
        f"  fake latency {args.latency_ms:g} ms, inflight {inflight} -> ideal {ideal:.0f} calls/s"
    )
    print(
        f"  nats sync_always=False (no fsync per write); "
        f"TAXOFORGE_LLM_MAX_CONCURRENCY={per_process} per process"
        + (f" ({per_generator} per generator)" if generators > 1 else "")
        + f"; TAXOFORGE_WORKER_CONCURRENCY generator={concurrency['generator']} "
        f"judge={concurrency['judge']} (taxonomy, selector: default)"
        + (f"; {generators} generator replicas" if generators > 1 else "")
    )
    print(
        f"  TAXOFORGE_LOG_LEVEL={args.log_level or 'default (info)'}, "
        f"TAXOFORGE_LOG_FORMAT=json, logs in {data_dir / 'logs'}"
    )
    print(
        f"  note: generator and judge hold up to {per_process} calls each, so the fake sees at "
        f"most {2 * per_process} at once"
    )
    result: PipelineResult | None = None
    rows: list[Row] = []
    with StackRun(stack, data_dir, args.keep) as session:
        t0 = time.perf_counter()
        stack.start()
        for _ in range(generators - 1):
            stack.add_replica("generator")
        print(f"  stack started in {time.perf_counter() - t0:.1f}s; running the job ...")
        fake = FakeControl(stack.llm_api_base)
        pids = dict(stack.processes())
        result = run_pipeline(stack, fake, args, ideal)
        rows.append(result.row)
        if result.job["state"] != "succeeded":
            session.failed = True
            print(
                f"\nJOB {result.job['state'].upper()}: {result.job.get('error')}", file=sys.stderr
            )
            print_tails(stack)
        if not args.skip_baselines:
            print("  pipeline done; running the baselines against the same fake ...")
            run = Baseline(result.row.calls, inflight, fake, pids[FAKE_PROC], ideal)
            rows += asyncio.run(run_baselines(stack.llm_api_base, run))

    assert result is not None
    job = result.job
    print()
    print(
        f"job {job['id']}: {job['state']}, planned {job['planned']}, finished {job['finished']}; "
        f"stages {_stage_counts(job)}"
    )
    sel = job.get("selection") or {}
    if sel:
        print(
            f"  selection: judged {sel['judged']}, failed {sel['failed']}, "
            f"sft {sel['sft_records']}, preference {sel['preference_records']}, "
            f"ties {sel['ties']}"
        )
    server = f"{result.server_wall_s:.2f}s" if result.server_wall_s is not None else "n/a"
    print(
        f"  wall (submit -> terminal state seen, 0.5 s polls) {result.row.wall_s:.2f}s; "
        f"server created_at -> finished_at {server}"
    )
    if result.judged_s is not None:
        judged = result.judged_s
        print(
            f"  every item judged (its LLM calls made) by the poll at {judged:.2f}s "
            f"(~{result.row.calls / judged:.0f} calls/s over that span); the last "
            f"{result.row.wall_s - judged:.2f}s were completion detection (selector tracker "
            f"period) and selection"
        )
    # A draft a gate turned down is drawn again and a call that failed is retried: those calls
    # are legitimate, so the plan's count is a floor. What must hold exactly is the items.
    calls_ok = result.row.calls >= result.expected_calls
    extra = result.row.calls - result.expected_calls
    print(
        f"  fake counted {result.row.calls} calls (the plan's count*(1+2k) = "
        f"{result.expected_calls}, {extra:+d}: {'OK' if calls_ok else 'TOO FEW'}; redraws "
        f"and retries add calls); fake max_inflight {result.row.fake_max_inflight}"
    )
    if (sel.get("rejections") or {}) and extra:
        print(f"  drafts the gates turned down (each redrawn): {sel['rejections']}")
    items = result.items
    items_ok = items is not None and items.ok
    if items is not None:
        print(
            f"  items: {items.planned} planned, {items.exported} exported + {items.dropped} "
            f"dropped, {items.lost} lost, {len(items.duplicated)} listed twice "
            f"{items.duplicated[:5] if items.duplicated else ''}: "
            f"{'OK' if items_ok else 'LOSS OR DUPLICATE'}"
        )
    sel_calls = (sel.get("usage") or {}).get("calls", "n/a")
    print(
        f"  usage.calls: selection (from the items) {sel_calls}, job live meter "
        f"{job['usage']['calls']} (each process flushes its meter about once a second)"
    )
    print()
    print_table(rows)
    print()
    print(
        "CPU s/call: pipeline = CPU of nats + services + gateway (not the fake) / calls; "
        "baselines = this process (time.process_time) / calls."
    )
    print("ideal/s = inflight / latency; ratio = calls/s / ideal/s.")
    print()
    print("pipeline CPU by process (utime+stime from /proc/<pid>/stat, submit -> done):")
    print_breakdown(result, pids)
    if args.json:
        summary = {
            "count": args.count,
            "responses": k,
            "latency_ms": args.latency_ms,
            "inflight": inflight,
            "sync_always": False,
            "log_level": args.log_level or "default",
            "speed_probe_ms": round(probe_ms, 1),
            "job_state": job["state"],
            "expected_calls": result.expected_calls,
            "items": asdict(result.items) if result.items else None,
            "server_wall_s": result.server_wall_s,
            "all_judged_seen_s": result.judged_s,
            "pipeline_cpu_by_process": {n: round(c, 3) for n, c in result.cpu_by_process.items()},
            "nats_messages_by_connection": {
                n: {"sent": s, "received": r} for n, (s, r) in result.nats_messages.items()
            },
            "rows": [r.summary() for r in rows],
        }
        print(json.dumps(summary))
    return 1 if session.failed or not calls_ok or not items_ok else 0


if __name__ == "__main__":
    sys.exit(main())
