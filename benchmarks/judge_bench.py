"""Judge-stage throughput with 1, 2 and 4 judge replicas against the FAKE model server.

For each replica count R it starts a fresh stack with only nats-server, the FAKE
OpenAI-compatible server (fixed ``--latency-ms``) and R judge processes, each working on
``--inflight`` messages at once. It records a pairwise-judging job directly in the job store,
publishes ``--pairs`` candidate pairs to the judge's work subject, and times the first publish
to the moment every item has an outcome. It prints judged pairs per second, the ideal rate and
the ratio between them, and the judge processes' CPU seconds per pair.

A pair costs two model calls, one per order (``Pairwise.compare`` in services/judge/pairwise.py).
Whether the two orders run one after the other or at once sets the ideal, so every run first
judges one pair alone and reads how many calls the fake saw at once: 1 means the orders run
one after the other (a pair takes 2 x latency), 2 means they run at once (1 x latency). The
ideal is R x inflight / (time per pair) pairs per second.

Run: ``.venv/bin/python benchmarks/judge_bench.py`` (``--help`` for the options).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import BenchError, FakeControl, StackRun, dead_processes, fake_stack, stack_cpu

from taxoforge.bus import Bus, Stage
from taxoforge.bus.topology import KV_JOBS, ended_subject
from taxoforge.jobs.model import new_job_id, now_ms
from taxoforge.jobs.store import JobStore
from taxoforge.pipeline import publish_work
from taxoforge.settings import BusSettings
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb
from taxoforge_cli.stack import Stack

FAKE_PROC = "llm"  # the Stack's name for the model server process (here: the fake)
JUDGE = "judge"  # the first judge process; replicas are judge-2, judge-3, ...
CALLS_PER_PAIR = 2  # both orders (no_swap off); the "tie" policy makes no third call
POLL_S = 0.1


def is_judge(name: str) -> bool:
    return name == JUDGE or name.startswith(f"{JUDGE}-")


@dataclass
class Row:
    """One replica count's timed run."""

    replicas: int
    inflight: int
    pairs: int
    latency_ms: float
    wall_s: float
    fake_calls: int
    fake_max_inflight: int
    judge_cpu_s: float
    nats_cpu_s: float
    fake_cpu_s: float
    judgments: int
    failed: int
    # From the one-pair probe: the most calls the fake saw at once for a single pair (1: the
    # two orders run one after the other; 2: at once), and that pair's wall time.
    calls_at_once_per_pair: int = 1
    probe_s: float = 0.0
    # When the last item's end was announced (tf.ended.<job>), from the first publish.
    last_end_s: float | None = None
    # Pairs each judge process judged in the timed job (from its usage record: calls / 2).
    pairs_by_process: dict[str, int] = field(default_factory=dict)
    warmup_pairs: int = 0
    warmup_s: float = 0.0

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def orders(self) -> str:
        return "concurrent" if self.calls_at_once_per_pair >= CALLS_PER_PAIR else "sequential"

    @property
    def latencies_per_pair(self) -> int:
        return math.ceil(CALLS_PER_PAIR / max(1, self.calls_at_once_per_pair))

    @property
    def pair_s(self) -> float:
        """Ideal time per pair: the model latencies one pair waits for, end to end."""
        return self.latencies_per_pair * self.latency_ms / 1000.0

    @property
    def ideal_pairs_per_s(self) -> float:
        return self.replicas * self.inflight / self.pair_s

    @property
    def waves_floor_s(self) -> float:
        """The least wall time: the pairs in whole waves of replicas x inflight, each a pair's
        time (the last, partial wave takes as long as a full one)."""
        return math.ceil(self.pairs / (self.replicas * self.inflight)) * self.pair_s

    @property
    def max_calls_expected(self) -> int:
        return self.replicas * self.inflight * self.calls_at_once_per_pair

    @property
    def ratio(self) -> float:
        return self.pairs_per_s / self.ideal_pairs_per_s

    @property
    def judge_cpu_per_pair(self) -> float:
        return self.judge_cpu_s / self.pairs

    @property
    def judge_cores(self) -> float:
        return self.judge_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "orders": self.orders,
            "pair_s": self.pair_s,
            "pairs_per_s": round(self.pairs_per_s, 2),
            "ideal_pairs_per_s": round(self.ideal_pairs_per_s, 2),
            "waves_floor_s": round(self.waves_floor_s, 3),
            "ratio_to_ideal": round(self.ratio, 3),
            "judge_cpu_s_per_pair": round(self.judge_cpu_per_pair, 6),
            "judge_avg_cores": round(self.judge_cores, 3),
        }


# ---- one job ----


def make_job(pairs: int) -> pb.Job:
    """A running generation job whose judge is the fake, judging pairwise (1-100)."""
    created = now_ms()
    recipe = pb.Recipe(
        name="judge-bench",
        count=pairs,
        responses_per_instruction=2,
        min_margin=10.0,
        # "default" is the stack's fake (TAXOFORGE_LLM_API_BASE): services resolve names only.
        models=pb.RoleModels(judge=pb.ModelConfig(model="default")),
        judging=pb.JudgeConfig(mode="pairwise"),
    )
    return pb.Job(
        id=new_job_id(),
        kind="generate",
        recipe=recipe,
        state=pb.JOB_STATE_RUNNING,
        created_at_ms=created,
        updated_at_ms=created,
        planned=pairs,
    )


def make_candidates(job_id: str, index: int) -> tuple[str, pb.Candidates]:
    """One item: an instruction and two candidate answers from responders 0 and 1."""
    item_id = f"i{index:06d}"
    instruction = pb.Instruction(
        job_id=job_id,
        item_id=item_id,
        seed=pb.Seed(job_id=job_id, item_id=item_id, index=index, language="en"),
        text=f"Explain how a heat pump moves energy from a cold place to a warm one ({index}).",
        strategy="tap",
    )
    answers = (
        "A heat pump compresses a refrigerant so that it releases heat indoors, then lets it "
        "expand and evaporate outdoors, where it absorbs heat again.",
        "It uses electricity to move heat the wrong way, like a fridge turned inside out.",
    )
    responses = [
        pb.Response(id=f"{item_id}.r{k}", text=text, responder=k, language_ok=True)
        for k, text in enumerate(answers)
    ]
    return item_id, pb.Candidates(instruction=instruction, responses=responses)


@dataclass
class JobRun:
    """One job's timing."""

    job_id: str
    wall_s: float  # first publish -> the poll that saw every outcome
    last_end_s: float | None  # first publish -> the last tf.ended hint received


async def run_job(
    stack: Stack, bus: Bus, jobs: JobStore, items: ItemStore, pairs: int, timeout_s: float
) -> JobRun:
    """Record a job, publish ``pairs`` items to the judge, wait until all have an outcome.

    Completion is the item store's count of outcomes, polled every ``POLL_S``. The judges also
    announce each end on ``tf.ended.<job>`` (core NATS, a hint); the time of the last one
    received is kept too, free of the poll's granularity.
    """
    job = make_job(pairs)
    if not await jobs.create(job):
        raise BenchError(f"job id {job.id} is taken")
    messages = [make_candidates(job.id, i) for i in range(pairs)]
    ends: list[float] = []

    async def _ended(_msg: Any) -> None:
        ends.append(time.perf_counter())

    sub = await bus.nc.subscribe(ended_subject(job.id), cb=_ended)
    try:
        started = time.perf_counter()
        await asyncio.gather(
            *(publish_work(bus, Stage.JUDGE, c, job.id, item_id) for item_id, c in messages)
        )
        wall = await _wait_outcomes(stack, items, job.id, pairs, started, timeout_s)
        await bus.nc.flush()
    finally:
        await sub.unsubscribe()
    last_end = ends[-1] - started if len(ends) >= pairs else None
    return JobRun(job.id, wall, last_end)


async def _wait_outcomes(
    stack: Stack, items: ItemStore, job_id: str, pairs: int, started: float, timeout_s: float
) -> float:
    last_report = started
    while True:
        done = await items.count(job_id, ItemKind.OUTCOME)
        now = time.perf_counter()
        if done >= pairs:
            return now - started
        dead = dead_processes(stack)
        if dead:
            raise BenchError(f"processes died during the run: {', '.join(dead)}")
        if now - started > timeout_s:
            raise BenchError(f"job {job_id}: {done}/{pairs} items ended after {timeout_s:.0f}s")
        if now - last_report >= 10:
            last_report = now
            print(f"    ... {now - started:5.0f}s {done}/{pairs} ended", file=sys.stderr)
        await asyncio.sleep(POLL_S)


async def calls_by_instance(bus: Bus, job_id: str) -> dict[int, int]:
    """Model calls each process counted against the job, by pid (usage.<job>.<instance>)."""
    kv = await bus.kv(KV_JOBS)
    watcher = await kv.watch(f"usage.{job_id}.*", ignore_deletes=True)
    out: dict[int, int] = {}
    try:
        while True:
            entry = await watcher.updates(timeout=10.0)  # type: ignore[no-untyped-call]
            if entry is None:  # the initial values are all delivered
                break
            if entry.value is None:
                continue
            usage = pb.Usage.FromString(entry.value)
            instance = entry.key.rsplit(".", 1)[-1]  # <host>-<pid>-<random>
            out[int(instance.rsplit("-", 2)[1])] = int(usage.calls)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return out


async def measure(stack: Stack, replicas: int, args: argparse.Namespace) -> Row:
    """On a running stack: the one-pair probe, the warm-up job, then the timed job."""
    fake = FakeControl(stack.llm_api_base)
    bus = await Bus.connect(BusSettings(nats_url=stack.nats_url), name="judge-bench")
    try:
        items = ItemStore(bus)
        jobs = JobStore(bus)
        # One pair alone: how many of its calls does the fake see at once?
        await fake.areset()
        probe = await run_job(stack, bus, jobs, items, 1, args.timeout_s)
        probe_stats = await fake.astats()
        if int(probe_stats["calls"]) != CALLS_PER_PAIR:
            raise BenchError(f"one pair made {probe_stats['calls']} calls, not {CALLS_PER_PAIR}")
        at_once = int(probe_stats["max_inflight"])
        warmup = replicas * args.inflight if args.warmup < 0 else args.warmup
        warmup_s = 0.0
        if warmup:
            warmup_s = (await run_job(stack, bus, jobs, items, warmup, args.timeout_s)).wall_s
        # A judge flushes its usage and acks after the outcome: let the last acks land.
        await asyncio.sleep(0.5)
        await fake.areset()
        pids = dict(stack.processes())
        cpu_before = stack_cpu(stack)
        run = await run_job(stack, bus, jobs, items, args.pairs, args.timeout_s)
        cpu_after = stack_cpu(stack)
        stats = await fake.astats()
        judgments = await items.count(run.job_id, ItemKind.JUDGMENT)
        failed = await items.count_failed(run.job_id)
        by_pid = await calls_by_instance(bus, run.job_id)
    finally:
        await bus.close()
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    names = {pid: name for name, pid in pids.items()}
    return Row(
        replicas=replicas,
        inflight=args.inflight,
        pairs=args.pairs,
        latency_ms=args.latency_ms,
        wall_s=run.wall_s,
        fake_calls=int(stats["calls"]),
        fake_max_inflight=int(stats["max_inflight"]),
        judge_cpu_s=sum(v for k, v in cpu.items() if is_judge(k)),
        nats_cpu_s=cpu.get("nats", 0.0),
        fake_cpu_s=cpu.get(FAKE_PROC, 0.0),
        judgments=judgments,
        failed=failed,
        calls_at_once_per_pair=at_once,
        probe_s=probe.last_end_s if probe.last_end_s is not None else probe.wall_s,
        last_end_s=run.last_end_s,
        pairs_by_process={
            names.get(pid, f"pid {pid}"): calls // CALLS_PER_PAIR
            for pid, calls in sorted(by_pid.items(), key=lambda kv: names.get(kv[0], ""))
        },
        warmup_pairs=warmup,
        warmup_s=warmup_s,
    )


def run_replicas(replicas: int, args: argparse.Namespace) -> Row:
    """A fresh stack with ``replicas`` judge processes, measured, then stopped."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"taxoforge-judge-bench-r{replicas}-"))
    stack = fake_stack(
        data_dir,
        latency_ms=args.latency_ms,
        log_level=args.log_level,
        env={"TAXOFORGE_LLM_MAX_CONCURRENCY": str(2 * args.inflight)},
        service_env={JUDGE: {"TAXOFORGE_WORKER_CONCURRENCY": str(args.inflight)}},
    )
    failure = f"FAILED with {replicas} replicas"
    with StackRun(stack, data_dir, args.keep, failure=failure) as session:
        t0 = time.perf_counter()
        stack.start(["nats", "llm", JUDGE])
        for _ in range(replicas - 1):
            stack.add_replica(JUDGE)
        print(
            f"  R={replicas}: stack up in {time.perf_counter() - t0:.1f}s "
            f"({', '.join(name for name, _ in stack.processes())}); logs in {stack.log_dir}",
            flush=True,
        )
        row = asyncio.run(measure(stack, replicas, args))
        if row.fake_calls != CALLS_PER_PAIR * row.pairs or row.judgments != row.pairs:
            session.failed = True
        return row


# ---- output ----


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'replicas':>8} {'pairs':>6} {'wall s':>7} {'pairs/s':>8} {'ideal/s':>8} "
        f"{'ratio':>6} {'speedup':>7} {'last end s':>10} {'floor s':>7} {'fake calls':>10} "
        f"{'fake maxinfl':>12} {'judge CPU s/pair':>16} {'judge cores':>11} "
        f"{'nats CPU s/pair':>15}"
    )
    print(header)
    print("-" * len(header))
    base = rows[0].pairs_per_s if rows else 0.0
    for r in rows:
        speedup = r.pairs_per_s / base if base else 0.0
        last_end = f"{r.last_end_s:.2f}" if r.last_end_s is not None else "n/a"
        print(
            f"{r.replicas:>8} {r.pairs:>6} {r.wall_s:>7.2f} {r.pairs_per_s:>8.2f} "
            f"{r.ideal_pairs_per_s:>8.2f} {r.ratio:>6.3f} {speedup:>7.2f} {last_end:>10} "
            f"{r.waves_floor_s:>7.2f} "
            f"{r.fake_calls:>10} {r.fake_max_inflight:>12} {r.judge_cpu_per_pair:>16.5f} "
            f"{r.judge_cores:>11.2f} {r.nats_cpu_s / r.pairs:>15.5f}"
        )


def print_details(rows: list[Row]) -> bool:
    """Per run: the probe, how the pairs spread over the judges, and the checks; all OK?"""
    ok = True
    for r in rows:
        split = ", ".join(f"{name} {n}" for name, n in r.pairs_by_process.items())
        checks = []
        if r.fake_calls != CALLS_PER_PAIR * r.pairs:
            checks.append(f"fake calls {r.fake_calls} != {CALLS_PER_PAIR * r.pairs}")
        if r.judgments != r.pairs or r.failed:
            checks.append(f"judgments {r.judgments}/{r.pairs}, failed {r.failed}")
        if r.fake_max_inflight > r.max_calls_expected:
            checks.append(f"fake max in-flight above {r.max_calls_expected}")
        ok = ok and not checks
        print(
            f"  R={r.replicas}: probe: one pair alone ended {r.probe_s:.2f}s after its publish; "
            f"the fake saw "
            f"{r.calls_at_once_per_pair} of its calls at once -> orders {r.orders}, "
            f"{r.latencies_per_pair} x latency per pair; fake max in-flight allowed "
            f"{r.max_calls_expected}"
        )
        print(
            f"        pairs by process: {split}; warm-up {r.warmup_pairs} pairs in "
            f"{r.warmup_s:.2f}s; fake CPU {r.fake_cpu_s / r.pairs:.5f} s/pair; "
            f"{'; '.join(checks) or 'checks OK'}"
        )
    return ok


# ---- main ----


def _replica_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("replica counts must be >= 1")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--replicas", type=_replica_list, default=[1, 2, 4], help="judge processes (1,2,4)"
    )
    p.add_argument("--pairs", type=int, default=200, help="candidate pairs judged per run (200)")
    p.add_argument("--latency-ms", type=float, default=200.0, help="fake reply delay (200)")
    p.add_argument(
        "--inflight", type=int, default=8, help="messages in flight per judge process (8)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=-1,
        help="pairs judged in an untimed job first (default: replicas x inflight; 0: none)",
    )
    p.add_argument("--json", action="store_true", help="also print a one-line JSON summary")
    p.add_argument(
        "--log-level", default=None, help="TAXOFORGE_LOG_LEVEL for the judges (default: info)"
    )
    p.add_argument("--timeout-s", type=float, default=600.0, help="give up on a run (600)")
    p.add_argument("--keep", action="store_true", help="keep the data dirs (logs) afterwards")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.inflight < 1 or args.latency_ms <= 0:
        p.error("--pairs and --inflight must be >= 1 and --latency-ms > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    c, lat = args.inflight, args.latency_ms
    print("taxoforge judge benchmark (against the FAKE OpenAI-compatible server)")
    print(
        f"  machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"  per run: {args.pairs} pairs (pairwise mode, 2 candidates, inconsistent -> tie, so "
        f"{CALLS_PER_PAIR} calls per pair, one per order), fake latency {lat:g} ms, {c} "
        f"messages in flight per judge process (TAXOFORGE_WORKER_CONCURRENCY={c}, "
        f"TAXOFORGE_LLM_MAX_CONCURRENCY={2 * c})"
    )
    print(
        "  ideal pairs/s = replicas x inflight / time per pair; time per pair = latency x "
        "(2 if Judge.compare makes the two order calls one after the other, 1 if at once), "
        "found by a one-pair probe in each run"
    )
    warm = "replicas x inflight" if args.warmup < 0 else str(args.warmup)
    print(
        f"  each run: fresh stack (nats sync_always=False, fake, judges); probe (1 pair) and "
        f"warm-up ({warm} pairs), untimed; then the timed job: first publish -> the poll "
        f"({POLL_S:g} s) that sees every item's outcome"
    )
    rows: list[Row] = []
    for replicas in args.replicas:
        rows.append(run_replicas(replicas, args))

    print()
    print_table(rows)
    print()
    print(
        "ratio = pairs/s / ideal/s. speedup = pairs/s / first row's pairs/s (ideal: replicas / "
        "first row's replicas). last end s = first publish -> last tf.ended hint (no poll "
        "granularity). floor s = ceil(pairs / (replicas x inflight)) x time per pair: whole "
        "waves, the least wall possible (with few waves it keeps the ratio below 1). "
        "judge CPU = utime+stime of every judge process over the timed job "
        "(/proc/<pid>/stat); judge cores = judge CPU / wall."
    )
    orders = sorted({r.orders for r in rows})
    if rows:
        r0 = rows[0]
        print(
            f"time per pair: Judge.compare's two order calls run {' / '.join(orders)} "
            f"(probe), so ideal = replicas x {c} / {r0.pair_s:g} s"
        )
    ok = print_details(rows)
    if args.json:
        summary = {
            "latency_ms": lat,
            "inflight_per_replica": c,
            "pairs": args.pairs,
            "calls_per_pair": CALLS_PER_PAIR,
            "sync_always": False,
            "rows": [r.summary() for r in rows],
        }
        print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
