"""Selection time and peak memory for 100k imported items, excluding LLM latency.

Writes a synthetic JSON Lines dataset of ``--items`` conversational rows (queries 10-60 words,
answers 30-300 words, ~200 topics whose queries carry "[tags: ...]" markers the FAKE tagger
repeats, answers carrying "[quality: N]" markers the FAKE judge scores by), with ~1% exact and
~1% near-duplicate queries, a few malformed rows, and 0.3% of rows that contain a prompt of a
small benchmark the script registers. It starts the whole suite against the FAKE model server
at zero latency, uploads the file (timed on its own), and runs one TACOS selection job
through the gateway with ``--budget`` records and ``--comparison-budget`` judge calls.

While the job runs it polls ``GET /v1/jobs/{id}`` every ``--poll-s`` to time each step
(prepare, tag, cluster, compare, select: when the job's ``step`` changes) and samples every
stack process's VmRSS; VmHWM (the kernel's peak RSS) is read at the end. It prints the wall
time, the time per step, items/s, model calls and calls/s, peak RSS per process, the report's
key numbers and the methods compared on the same candidates.

The fake calls no model and answers at once, so these figures are the suite's own cost
(NATS, the item store, the Python services, clustering, embeddings, exports), not a model's.

``--corpus realistic`` writes a real-shaped corpus instead (``realistic_corpus.py``: answers of
50-400 words, tens of thousands of distinct raw tags in a long tail of spellings and
near-synonyms, ~3% near-duplicates); the default, ``synthetic``, is the corpus above.

Run: ``.venv/bin/python benchmarks/select_bench.py`` (``--help`` for the options). A smoke
run: ``--items 2000``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import realistic_corpus
from common import (
    CLK_TCK,
    TERMINAL,
    BenchError,
    FakeControl,
    StackRun,
    children,
    cpu_by_process,
    dead_processes,
    fake_stack,
    file_chunks,
    memory_kib,
    print_tails,
    speed_probe,
    tree_rss_kib,
)

from taxoforge_cli.stack import Stack

STEPS = ("prepare", "tag", "cluster", "compare", "select")
# The selector and its child processes (screening), as one row of the memory table.
SELECTOR_TREE = "selector+"
# The processes a selection job works in: shown first in the memory table.
FOCUS = ("selector", "judge", "gateway")
BENCHMARK = "bench"

# Tags the topics draw 2-3 of (from any group), so that some tags are shared between topics.
TAG_GROUPS = (
    "python debugging testing packaging asyncio typing numpy pandas sql databases indexing",
    "networking security cryptography linux shell git docker kubernetes cloud billing",
    "javascript css react accessibility mobile android ios rust memory concurrency compilers",
    "algorithms graphs statistics probability calculus geometry physics chemistry biology",
    "genetics medicine nutrition fitness psychology history geography economics finance",
    "taxes law contracts privacy marketing writing poetry grammar translation french spanish",
    "german cooking baking gardening travel music photography painting film astronomy",
    "climate ecology energy chess parenting careers interviews education philosophy ethics",
    "logistics manufacturing retail agriculture insurance",
)
TAG_VOCAB = [tag for group in TAG_GROUPS for tag in group.split()]
OPENERS = ("How do I", "Why does", "Can you explain", "What is the best way to", "Please help")


@dataclass
class Planted:
    """What the generated file holds, to set beside what the job reports."""

    rows: int = 0
    bytes: int = 0
    topics: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    contaminated: int = 0
    malformed: int = 0
    benchmark_prompts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # The realistic corpus's open tags: distinct raw spellings, and the concepts behind them.
    raw_tags: int = 0
    concepts: int = 0


def english_words() -> list[str]:
    """Whole English words, most frequent first: the lowercase alphabetic entries of the
    local embedder's WordPiece vocabulary (installed with the suite). Each is one token there,
    so texts get realistic token counts, unlike invented words."""
    from tokenizers import Tokenizer

    from taxoforge.minilm import installed_model_dir

    vocab = Tokenizer.from_file(str(installed_model_dir() / "tokenizer.json")).get_vocab()
    words = [w for w in vocab if w.isascii() and w.isalpha() and len(w) >= 3]
    return sorted(words, key=lambda w: vocab[w])


class Words:
    """A vocabulary drawn with a Zipf-like frequency (a few words are common)."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.cum = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(words))))

    def draw(self, rng: random.Random, n: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cum, k=n)


@dataclass
class Topic:
    tags: str
    words: list[str]


def _topics(rng: random.Random, words: Words, count: int) -> tuple[list[Topic], list[float]]:
    """``count`` topics with distinct sets of 2-3 tags and their own frequent words; topic
    sizes follow a skewed (Zipf-like) distribution."""
    seen: set[tuple[str, ...]] = set()
    topics: list[Topic] = []
    while len(topics) < count:
        tags = tuple(sorted(rng.sample(TAG_VOCAB, rng.choice((2, 2, 3)))))
        if tags in seen:
            continue
        seen.add(tags)
        topics.append(Topic(", ".join(tags), rng.sample(words.words, 40)))
    weights = [1.0 / (rank + 3) ** 0.8 for rank in range(count)]
    return topics, list(itertools.accumulate(weights))


def _length(rng: random.Random, low: int, high: int, mode: int) -> int:
    return round(rng.triangular(low, high, mode))


def _body(rng: random.Random, words: Words, topic: Topic, n: int) -> list[str]:
    """n words: about a third from the topic's own words, the rest from the vocabulary."""
    out = words.draw(rng, n)
    for i in range(0, n, 3):
        out[i] = rng.choice(topic.words)
    return out


def _row(query: str, answer: str, system: str | None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def generate(path: Path, items: int, seed: int) -> Planted:
    """Write ``items`` rows of JSON Lines to ``path``; returns what was planted."""
    started = time.perf_counter()
    rng = random.Random(seed)
    vocabulary = english_words()
    words = Words(vocabulary[:15000])
    topics, topic_cum = _topics(rng, words, 200)
    planted = Planted(topics=len(topics))
    planted.benchmark_prompts, special = realistic_corpus.plant(
        rng, vocabulary[15000:], items, 0.01
    )
    # Earlier clean rows (their query body, tags, length) that duplicates copy from.
    sources: list[tuple[str, str]] = []
    with path.open("w", encoding="utf-8") as fh:
        for row in range(items):
            kind = special.get(row, "clean")
            topic = topics[bisect.bisect_left(topic_cum, rng.random() * topic_cum[-1])]
            quality = rng.randint(5, 98)
            answer_words = _body(rng, words, topic, _length(rng, 30, 300, 110))
            answer = f"{realistic_corpus.sentences(answer_words, rng)} [quality: {quality}]"
            system = "You are a helpful assistant." if rng.random() < 0.1 else None
            if kind == "malformed":
                planted.malformed += 1
                broken = (
                    '{"messages": [{"role": "user", "content": "unterminated'
                    if planted.malformed % 2
                    else json.dumps({"messages": [{"role": "user", "content": "no answer?"}]})
                )
                fh.write(broken + "\n")
                continue
            if kind == "dup" and sources:
                body, tags = rng.choice(sources)
                query = f"{body.upper()}!! [tags: {tags}]"  # case and punctuation aside
                planted.exact_duplicates += 1
            elif kind == "near" and sources:
                body, tags = rng.choice(sources)
                query = f"{body} please [tags: {tags}]"  # one more word: Jaccard >= 0.96
                planted.near_duplicates += 1
            elif kind == "contaminated":
                prompt = rng.choice(planted.benchmark_prompts)
                before = " ".join(_body(rng, words, topic, rng.randint(15, 25)))
                after = " ".join(_body(rng, words, topic, rng.randint(15, 25)))
                query = f"{before}: {prompt} {after}? [tags: {topic.tags}]"
                planted.contaminated += 1
            else:
                opener = rng.choice(OPENERS)
                n = _length(rng, 10, 60, 22) - len(opener.split())
                body = f"{opener} {' '.join(_body(rng, words, topic, max(n, 5)))}?"
                query = f"{body} [tags: {topic.tags}]"
                if n >= 24:  # long enough that one extra word stays above the 0.8 threshold
                    sources.append((body, topic.tags))
            fh.write(json.dumps(_row(query, answer, system)) + "\n")
    planted.rows = items
    planted.bytes = path.stat().st_size
    planted.seconds = time.perf_counter() - started
    return planted


def generate_realistic(path: Path, items: int, seed: int) -> Planted:
    """The real-shaped corpus (see ``realistic_corpus``), as what was planted."""
    started = time.perf_counter()
    made = realistic_corpus.generate(path, items, seed, english_words(), _row)
    return Planted(
        rows=made.rows,
        bytes=path.stat().st_size,
        topics=made.topics,
        exact_duplicates=made.exact_duplicates,
        near_duplicates=made.near_duplicates,
        contaminated=made.contaminated,
        malformed=made.malformed,
        benchmark_prompts=made.benchmark_prompts,
        seconds=time.perf_counter() - started,
        raw_tags=made.distinct_raw_tags,
        concepts=made.concepts,
    )


# ---- processes: RSS and CPU ----


class Sampler:
    """A thread that reads every stack process's VmRSS each ``period_s`` and keeps the peak
    per process and per phase (the phase is whatever the main thread last set)."""

    def __init__(self, pids: dict[str, int], period_s: float) -> None:
        self.pids = pids
        self.period_s = period_s
        self.phase = "startup"
        self.peak: dict[tuple[str, str], int] = {}  # (process, phase) -> KiB
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> None:
        phase = self.phase
        for name, pid in self.pids.items():
            rss = memory_kib(pid).get("VmRSS")
            if rss is not None:
                key = (name, phase)
                self.peak[key] = max(self.peak.get(key, 0), rss)
            if name == "selector":  # its screening processes' memory is the selector's too
                key = (SELECTOR_TREE, phase)
                tree = (rss or 0) + sum(tree_rss_kib(child) for child in children(pid))
                self.peak[key] = max(self.peak.get(key, 0), tree)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def peak_of(self, name: str, phases: tuple[str, ...] | None = None) -> int:
        return max(
            (v for (n, p), v in self.peak.items() if n == name and (phases is None or p in phases)),
            default=0,
        )


def _busy_jiffies() -> tuple[int, int]:
    """All CPUs' busy and steal time so far, from /proc/stat (in clock ticks)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields[:8]) - idle - steal, steal


class StepProfiler:
    """py-spy recording one process (the selector) step by step: a recorder per step, each
    writing collapsed stacks to ``<dir>/<step>.txt``; idle threads are not sampled."""

    def __init__(self, pid: int, out: Path, rate: int = 67) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.files: dict[str, Path] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        out.mkdir(parents=True, exist_ok=True)

    def step(self, name: str) -> None:
        self.stop()
        path = self.out / f"{name}.txt"
        self.files[name] = path
        spy = Path(sys.executable).with_name("py-spy")
        self._proc = subprocess.Popen(
            [
                *(str(spy), "record", "--pid", str(self.pid), "--rate", str(self.rate)),
                *("--format", "raw", "--nonblocking", "--output", str(path)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._proc = None


Ranked = list[tuple[str, float]]
_LINE = re.compile(r":\d+\)$")
_OWN_CODE = re.compile(r"\((?:.*/)?(?:taxoforge|services)/")
# Frames every sample of the event loop's thread passes through: not worth listing.
_ENTRY = re.compile(
    r"^(<module>|main|run_service|run) \((services/selector/(__main__|app)|taxoforge/"
    r"(context|service))\.py\)$"
)


def top_costs(path: Path, n: int = 8) -> tuple[int, Ranked, Ranked]:
    """From py-spy's collapsed stacks: the samples, the top ``n`` functions by self time and
    the top ``n`` of the suite's own functions (taxoforge/, services/) by inclusive time."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, [], []
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        # "function (path:line)": counted per function, whatever the line.
        frames = [_LINE.sub(")", f.strip()) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in dict.fromkeys(frames):
            if _OWN_CODE.search(frame) and not _ENTRY.match(frame):
                total[frame] = total.get(frame, 0) + count

    def top(d: dict[str, int]) -> Ranked:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [(name, 100.0 * c / max(samples, 1)) for name, c in ranked]

    return samples, top(own), top(total)


def print_profiles(profiler: StepProfiler) -> None:
    print()
    print(f"py-spy on the selector, per step (collapsed stacks in {profiler.out})")
    for step, path in profiler.files.items():
        samples, own, total = top_costs(path)
        print(f"  {step}: {samples} samples at {profiler.rate}/s (busy threads only)")
        print("    self time:")
        for name, share in own:
            print(f"      {share:5.1f}%  {name[:150]}")
        print("    the suite's functions, inclusive:")
        for name, share in total:
            print(f"      {share:5.1f}%  {name[:150]}")


# ---- the selector's log: when each step ended, server side ----

# The selector's log event that ends each step (step_complete carries the step's name).
_STEP_END = {
    "prepare": ("prepared", None),
    "tag": ("step_complete", "tag"),
    "cluster": ("clustered", None),
    "compare": ("step_complete", "compare"),
    "select": ("job_selected", None),
}


def server_steps(
    logs: Iterable[Path], job: dict[str, Any]
) -> tuple[dict[str, float], int | None, int | None]:
    """Each step's duration from the selectors' JSON logs (its end event, minus the previous
    step's end; prepare from the job's created_at), k from the "clustered" line, and how many
    texts DEITA embedded from the "job_selected" line."""
    ends: dict[str, datetime] = {}
    clusters: int | None = None
    embedded: int | None = None
    lines: list[str] = []
    for log in logs:
        try:
            lines += log.read_text(errors="replace").splitlines()
        except OSError:
            continue
    lines.sort(key=_timestamp)  # replicas' lines in time order
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict) or event.get("job_id") != job["id"]:
            continue
        for step, (name, which) in _STEP_END.items():
            if event.get("event") == name and which in (None, event.get("step")):
                ends.setdefault(step, datetime.fromisoformat(event["timestamp"]))
        if event.get("event") == "clustered" and clusters is None:
            clusters = int(event.get("clusters", 0))
        if event.get("event") == "job_selected" and "deita_embedded" in event:
            embedded = int(event["deita_embedded"])
    out: dict[str, float] = {}
    before = datetime.fromisoformat(job["created_at"]) if job.get("created_at") else None
    for step in STEPS:
        end = ends.get(step)
        if end is not None and before is not None:
            out[step] = (end - before).total_seconds()
        before = end
    return out, clusters, embedded


# ---- the run ----


@dataclass
class StepTiming:
    """When a poll first saw the job at a step (and the step's CPU per process), and how many
    of its results (tag, compare) were made before: a step's tasks are queued before the job
    moves to it, so their work starts a little early."""

    step: str
    start_s: float
    end_s: float = 0.0
    cpu_start: dict[str, float] = field(default_factory=dict)
    cpu_end: dict[str, float] = field(default_factory=dict)
    early: int = 0

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s

    def cpu(self, name: str) -> float:
        return self.cpu_end.get(name, 0.0) - self.cpu_start.get(name, 0.0)


@dataclass
class Result:
    planted: Planted
    upload_s: float
    upload: dict[str, Any]
    job: dict[str, Any]
    wall_s: float
    steps: list[StepTiming]
    hwm: dict[str, int]
    sampler: Sampler
    polls: int
    slowest_poll_s: float
    fake_calls: int | None
    pids: dict[str, int]
    # CPU seconds over the selection: every CPU's busy time, the stack's processes, this
    # script, and steal (time the hypervisor gave to other machines).
    busy_cpu_s: float = 0.0
    stack_cpu_s: float = 0.0
    own_cpu_s: float = 0.0
    steal_s: float = 0.0
    server_steps: dict[str, float] = field(default_factory=dict)
    clusters: int | None = None
    deita_embedded: int | None = None


def _stage_counts(job: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {s["stage"]: (s["done"], s["failed"], s.get("planned", 0)) for s in job["stages"]}


def run(
    stack: Stack,
    args: argparse.Namespace,
    data: Path,
    planted: Planted,
    profiler: StepProfiler | None = None,
) -> Result:
    pids = dict(stack.processes())
    sampler = Sampler(pids, args.poll_s)
    sampler.start()
    try:
        with httpx.Client(base_url=stack.gateway_url, timeout=600) as api:
            prompts = "\n".join(planted.benchmark_prompts).encode()
            resp = api.put(f"/v1/benchmarks/{BENCHMARK}", content=prompts)
            if resp.status_code != 201:
                raise BenchError(f"PUT /v1/benchmarks answered {resp.status_code}: {resp.text}")
            sampler.phase = "upload"
            started = time.perf_counter()
            resp = api.post("/v1/uploads", params={"name": data.name}, content=file_chunks(data))
            upload_s = time.perf_counter() - started
            if resp.status_code != 201:
                raise BenchError(f"POST /v1/uploads answered {resp.status_code}: {resp.text}")
            upload: dict[str, Any] = resp.json()
            sampler.sample()
            selection: dict[str, Any] = {
                "method": "tacos",
                "budget": args.budget,
                "comparison_budget": args.comparison_budget,
                "decontaminate": [BENCHMARK],
                "seed": args.seed,
            }
            if args.compare:
                selection["compare"] = [m.strip() for m in args.compare.split(",") if m.strip()]
            body = {"name": "select-bench", "source": {"upload": upload["upload"]}}
            body["selection"] = selection
            fake = FakeControl(stack.llm_api_base)
            fake.reset()
            sampler.phase = "prepare"
            busy0, steal0 = _busy_jiffies()
            stack0 = sum(cpu_by_process(pids.items()).values())
            own0 = time.process_time()
            started = time.perf_counter()
            resp = api.post("/v1/selections", json=body)
            if resp.status_code != 201:
                raise BenchError(f"POST /v1/selections answered {resp.status_code}: {resp.text}")
            job: dict[str, Any] = resp.json()
            steps: list[StepTiming] = []
            early: dict[str, int] = {}  # results of a step seen before the job was at it
            polls, slowest, last_report = 0, 0.0, started
            while True:
                step = job.get("step") or ""
                now = time.perf_counter() - started
                if step and (not steps or steps[-1].step != step):
                    cpu = cpu_by_process(pids.items())
                    if steps:
                        steps[-1].end_s, steps[-1].cpu_end = now, cpu
                    steps.append(StepTiming(step, now, cpu_start=cpu, early=early.get(step, 0)))
                    sampler.phase = step
                    if profiler is not None:
                        profiler.step(step)
                if step in STEPS:
                    for later, (done, failed, _) in _stage_counts(job).items():
                        if later in STEPS and STEPS.index(later) > STEPS.index(step):
                            early[later] = done + failed
                if job["state"] in TERMINAL:
                    break
                if now > args.timeout_s:
                    raise BenchError(f"job {job['id']} still at {step} after {now:.0f}s")
                dead = dead_processes(stack)
                if dead:
                    raise BenchError(f"processes died during the job: {', '.join(dead)}")
                if time.perf_counter() - last_report >= 15:
                    last_report = time.perf_counter()
                    counts = " ".join(f"{s}={d}/{p}" for s, (d, _, p) in _stage_counts(job).items())
                    print(f"  ... {now:6.0f}s step {step}: {counts}", file=sys.stderr, flush=True)
                time.sleep(args.poll_s)
                t = time.perf_counter()
                job = api.get(f"/v1/jobs/{job['id']}").json()
                slowest = max(slowest, time.perf_counter() - t)
                polls += 1
            wall = time.perf_counter() - started
            busy1, steal1 = _busy_jiffies()
            stack_cpu = sum(cpu_by_process(pids.items()).values()) - stack0
            own_cpu = time.process_time() - own0
            if steps:
                steps[-1].end_s, steps[-1].cpu_end = wall, cpu_by_process(pids.items())
            sampler.sample()
            hwm = {name: memory_kib(pid).get("VmHWM", 0) for name, pid in pids.items()}
            fake_calls: int | None = None
            stats = httpx.get(f"{fake.base}/_fake/stats", timeout=60)
            if stats.status_code == 200:
                fake_calls = int(stats.json()["calls"])
    finally:
        sampler.stop()
        if profiler is not None:
            profiler.stop()
    return Result(
        planted=planted,
        upload_s=upload_s,
        upload=upload,
        job=job,
        wall_s=wall,
        steps=steps,
        hwm=hwm,
        sampler=sampler,
        polls=polls,
        slowest_poll_s=slowest,
        fake_calls=fake_calls,
        pids=pids,
        busy_cpu_s=(busy1 - busy0) / CLK_TCK,
        stack_cpu_s=stack_cpu,
        own_cpu_s=own_cpu,
        steal_s=(steal1 - steal0) / CLK_TCK,
    )


# ---- output ----


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def print_result(r: Result, args: argparse.Namespace) -> None:
    job = r.job
    sel = job.get("selection") or {}
    imported = sel.get("imported") or {}
    tacos = sel.get("tacos") or {}
    calls = int(job["usage"]["calls"])
    rows = int(imported.get("rows") or r.planted.rows)
    final = _stage_counts(job)
    print()
    print(f"job {job['id']}: {job['state']}" + (f" ({job['error']})" if job.get("error") else ""))
    print(
        f"upload: {r.upload['bytes'] / 2**20:,.1f} MiB in {r.upload_s:.1f}s "
        f"({r.upload['bytes'] / 2**20 / r.upload_s:,.1f} MiB/s), streamed in 1 MiB chunks"
    )
    print()
    print("whole selection (POST /v1/selections -> the poll that saw it succeed)")
    print(f"  {'wall time':<36} {r.wall_s:>10.1f} s")
    print(f"  {'items (rows imported) per second':<36} {rows / r.wall_s:>10.1f}")
    print(f"  {'model calls (job usage.calls)':<36} {calls:>10,}")
    print(f"  {'model calls per second (whole)':<36} {calls / r.wall_s:>10.1f}")
    calling = sum(s.seconds for s in r.steps if s.step in ("tag", "compare"))
    if calling > 0:
        print(f"  {'model calls per second of tag+compare':<36} {calls / calling:>10.1f}")
    if r.fake_calls is not None:
        print(f"  {'calls the fake counted':<36} {r.fake_calls:>10,}")
    cores = os.cpu_count() or 1
    other = max(0.0, r.busy_cpu_s - r.stack_cpu_s - r.own_cpu_s)
    print(
        f"  {'CPU: stack / this script / other':<36} {r.stack_cpu_s:>10.0f} / {r.own_cpu_s:.0f} / "
        f"{other:.0f} core-s (machine {100 * r.busy_cpu_s / (cores * r.wall_s):.0f}% busy; "
        f"steal {r.steal_s:.0f} s)"
    )
    print()
    cpu_names = [n for n in ("selector", "judge", "nats", "llm", "gateway") if n in r.pids]
    header = (
        f"  {'step':<8} {'wall s':>8} {'share':>6} {'server s':>9} {'done':>8} {'failed':>6} "
        f"{'per s':>8}  " + " ".join(f"{n + ' CPU s':>13}" for n in cpu_names)
    )
    print(
        f"time per step (wall: from the {args.poll_s:g} s poll that first saw the step to the "
        "next; server: from the selector's log)"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for s in r.steps:
        done, failed, _ = final.get(s.step, (0, 0, 0))
        per_s = ""
        if s.step in ("tag", "compare") and s.seconds > 0:
            per_s = f"{(done + failed - s.early) / s.seconds:8.1f}"
        server = r.server_steps.get(s.step)
        print(
            f"  {s.step:<8} {s.seconds:>8.1f} {100 * s.seconds / r.wall_s:>5.1f}% "
            f"{'' if server is None else f'{server:.1f}':>9} {done:>8,} {failed:>6,} "
            f"{per_s:>8}  " + " ".join(f"{s.cpu(n):>13.1f}" for n in cpu_names)
        )
    print(
        "  (done: the step's results, 1 for a whole-job step; per s: results made during the "
        "step per second of it)"
    )
    for s in r.steps:
        if s.early:
            print(
                f"  ({s.early:,} {s.step} results were made before the job moved to {s.step}: "
                "its tasks are queued first, so they run while the previous step finishes)"
            )
    print(f"  ({r.polls} polls; the slowest GET /v1/jobs took {r.slowest_poll_s:.2f}s)")
    print()
    print(
        "peak RSS per process, MiB (VmHWM: the kernel's peak over the process's life; then "
        f"VmRSS peaks sampled every {args.poll_s:g} s during the upload and each step)"
    )
    phases = ("upload", *STEPS)
    head = f"  {'process':<10} {'VmHWM':>7} " + " ".join(f"{p:>8}" for p in phases)
    print(head)
    print("  " + "-" * (len(head) - 2))
    order = [*FOCUS, *(n for n in r.pids if n not in FOCUS)]
    order.insert(order.index("selector") + 1, SELECTOR_TREE)
    for name in order:
        # The tree has no kernel peak: its column shows the largest sum sampled.
        hwm = r.hwm.get(name) if name != SELECTOR_TREE else r.sampler.peak_of(name)
        print(
            f"  {name:<10} {_mib(hwm or 0):>7} "
            + " ".join(f"{_mib(r.sampler.peak_of(name, (p,))):>8}" for p in phases)
        )
    print(
        f"  ({SELECTOR_TREE}: the selector with the processes it starts to screen an import, "
        "their VmRSS summed at each sample)"
    )
    print()
    contaminated = sum((sel.get("contaminated") or {}).values())
    print("report (beside it: what the file holds, or the limit asked for)")
    figures: list[tuple[str, int | str, str]] = [
        ("rows", rows, f"{r.planted.rows:,} rows"),
        ("malformed", imported.get("malformed", 0), f"{r.planted.malformed} planted"),
        ("duplicates", sel.get("duplicates", 0), f"{r.planted.exact_duplicates} planted"),
        ("near_duplicates", sel.get("near_duplicates", 0), f"{r.planted.near_duplicates} planted"),
        ("contaminated", contaminated, f"{r.planted.contaminated} planted"),
        ("candidates", sel.get("candidates", 0), ""),
        ("tagged", tacos.get("tagged", 0), ""),
        (
            "raw_tags / kept_tags",
            f"{tacos.get('raw_tags', 0)} / {tacos.get('kept_tags', 0)}",
            f"{r.planted.raw_tags:,} raw tags over {r.planted.concepts:,} concepts planted"
            if r.planted.raw_tags
            else "",
        ),
        (
            "clusters",
            r.clusters if r.clusters is not None else len(sel.get("clusters") or []),
            f"k = sqrt(candidates / 2); {r.planted.topics} topics planted",
        ),
        ("comparisons", tacos.get("comparisons", 0), ""),
        ("judge_calls", tacos.get("judge_calls", 0), f"budget {args.comparison_budget or 'all'}"),
        ("unscored", tacos.get("unscored", 0), "candidates with no comparative score"),
        ("selected", sel.get("selected", 0), f"budget {args.budget or 'all'}"),
    ]
    for label, value, note in figures:
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"  {label:<22} {shown:>12}  {note}")
    print()
    print("methods on the same candidates (* the job's method)")
    print(f"  {'method':<10} {'records':>8} {'mean_quality':>13} {'clusters_covered':>17}")
    for m in sel.get("methods") or []:
        mark = " *" if m.get("chosen") else ""
        print(
            f"  {m['method']:<10} {m['records']:>8,} {m['mean_quality']:>13.2f} "
            f"{m['clusters_covered']:>17}{mark}"
        )


def embed_probe(data: Path, n: int) -> tuple[int, float]:
    """Time the local embedder (all-MiniLM-L6-v2 in numpy, what DEITA's diversity filter runs
    in the select step) on the first ``n`` rows' "query\nresponse" texts, in this process
    with the stack stopped; returns (texts, seconds)."""
    from taxoforge.minilm import MiniLM

    texts: list[str] = []
    with data.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                turns = json.loads(line)["messages"]
            except (json.JSONDecodeError, KeyError):
                continue
            if len(turns) >= 2 and turns[-1]["role"] == "assistant":
                texts.append(f"{turns[-2]['content']}\n{turns[-1]['content']}")
            if len(texts) == n:
                break
    model = MiniLM()
    model.encode(texts[:8])  # load and warm up
    started = time.perf_counter()
    model.encode(texts)
    return len(texts), time.perf_counter() - started


def print_probe(probe: tuple[int, float], r: Result, args: argparse.Namespace) -> None:
    texts, seconds = probe
    rate = texts / seconds
    print()
    print(
        f"embedder probe (stack stopped): all-MiniLM-L6-v2 embedded {texts} query+response "
        f"texts in {seconds:.1f}s = {rate:.1f} texts/s."
    )
    if r.deita_embedded is not None and (not args.compare or "deita" in args.compare):
        print(
            f"DEITA in the select step embedded {r.deita_embedded:,} texts (the blocks of 512 "
            f"its walk reached, best first): about {r.deita_embedded / rate:.0f}s at that rate."
        )


def summary(r: Result) -> dict[str, Any]:
    sel = r.job.get("selection") or {}
    return {
        "state": r.job["state"],
        "items": r.planted.rows,
        "raw_tags_planted": r.planted.raw_tags,
        "bytes": r.planted.bytes,
        "upload_s": round(r.upload_s, 2),
        "wall_s": round(r.wall_s, 2),
        "steps_s": {s.step: round(s.seconds, 2) for s in r.steps},
        "server_steps_s": {k: round(v, 2) for k, v in r.server_steps.items()},
        "clusters": r.clusters,
        "calls": r.job["usage"]["calls"],
        "fake_calls": r.fake_calls,
        "vm_hwm_mib": {n: round(v / 1024, 1) for n, v in r.hwm.items()},
        "selector_tree_peak_mib": round(r.sampler.peak_of(SELECTOR_TREE) / 1024, 1),
        "report": {
            k: sel.get(k)
            for k in ("candidates", "selected", "duplicates", "near_duplicates", "contaminated")
        },
        "tacos": sel.get("tacos"),
        "methods": sel.get("methods"),
    }


# ---- main ----


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--items", type=int, default=100_000, help="rows in the generated file")
    p.add_argument(
        "--corpus",
        choices=("synthetic", "realistic"),
        default="synthetic",
        help="synthetic: short texts, ~100 tags; realistic: real-shaped lengths, a long tail of "
        "raw tags with spelling variants, ~3%% near-duplicates (see realistic_corpus.py)",
    )
    p.add_argument("--budget", type=int, default=5000, help="records to select (0: all)")
    p.add_argument(
        "--comparison-budget",
        type=int,
        default=20_000,
        help="judge calls comparative scoring may spend (2 per comparison, so 20000 = 10k "
        "comparisons); 0 compares every sample but the references: ~2 calls per item",
    )
    p.add_argument(
        "--compare",
        default="",
        help="methods measured beside tacos, comma-separated (empty: the default, all five "
        "others: deita, alpagasus, random, longest, score)",
    )
    p.add_argument(
        "--worker-concurrency",
        type=int,
        default=0,
        help="TAXOFORGE_WORKER_CONCURRENCY for the selector and the judge (0: theirs, 32)",
    )
    p.add_argument(
        "--llm-concurrency",
        type=int,
        default=0,
        help="TAXOFORGE_LLM_MAX_CONCURRENCY for every process (0: theirs, 64)",
    )
    p.add_argument("--poll-s", type=float, default=0.5, help="job poll and RSS sample period")
    p.add_argument("--seed", type=int, default=1, help="seed of the data and of the selection")
    p.add_argument("--log-level", default=None, help="TAXOFORGE_LOG_LEVEL (None: info)")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="give up on the job")
    p.add_argument(
        "--embed-probe",
        type=int,
        default=256,
        help="after the run, time the local embedder on this many of the file's texts (0: no)",
    )
    p.add_argument(
        "--replicas",
        default="",
        help="more processes of a service, e.g. selector=2,judge=2 (default: one of each)",
    )
    p.add_argument(
        "--warm-tag-store",
        action="store_true",
        help="use the machine's store of tag vectors (as a later job over similar data "
        "would); by default it is off, as for a dataset never seen",
    )
    p.add_argument("--json", action="store_true", help="also print a one-line JSON summary")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the selector with py-spy, one file per step in this folder, and print "
        "each step's top costs",
    )
    p.add_argument("--keep", action="store_true", help="keep the data dir (file, logs)")
    args = p.parse_args(argv)
    if args.items < 100:
        p.error("--items must be at least 100")
    if min(args.budget, args.comparison_budget, args.worker_concurrency) < 0:
        p.error("--budget, --comparison-budget and --worker-concurrency must be >= 0")
    return args


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return (
        f"{os.cpu_count()} CPUs ({model or 'unknown'}), {mem_kib / 2**20:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def _timestamp(line: str) -> str:
    """A JSON log line's timestamp (ISO 8601 sorts as text); "" when it has none."""
    start = line.find('"timestamp": "')
    return line[start + 14 : start + 46] if start >= 0 else ""


def _replicas(spec: str) -> dict[str, int]:
    """``selector=2,judge=2`` as {service: processes}."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        service, _, count = part.partition("=")
        if service not in ("selector", "judge") or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--replicas: {part!r} is not selector=N or judge=N")
        out[service] = int(count)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="taxoforge-select-bench-"))
    replicas = _replicas(args.replicas)
    env: dict[str, str] = {}
    if not args.warm_tag_store:
        # A new dataset: no tag vector of it is on the machine yet (the models' own files,
        # made once per machine, stay).
        env["TAXOFORGE_EMBED_TAG_STORE_SIZE"] = "0"
    if args.llm_concurrency:
        env["TAXOFORGE_LLM_MAX_CONCURRENCY"] = str(args.llm_concurrency)
    service_env: dict[str, dict[str, str]] = {}
    if args.worker_concurrency:
        workers = {"TAXOFORGE_WORKER_CONCURRENCY": str(args.worker_concurrency)}
        service_env = {"selector": workers, "judge": workers}
    print("taxoforge selection benchmark (FAKE model server at zero latency)")
    print(f"  machine: {_machine()}")
    print(f"  speed probe: {speed_probe():.0f} ms (a fixed pure-Python workload; lower is quicker)")
    print(
        f"  {args.corpus} corpus, items {args.items:,}, budget {args.budget or 'all'} records, "
        "comparison budget "
        f"{args.comparison_budget or 'every sample'} judge calls, method tacos (compared "
        f"with {args.compare or 'all others'}), seed {args.seed}"
    )
    print(
        f"  TAXOFORGE_WORKER_CONCURRENCY selector/judge: {args.worker_concurrency or 'default'}; "
        f"TAXOFORGE_LLM_MAX_CONCURRENCY: {args.llm_concurrency or 'default'}; "
        f"log level {args.log_level or 'default (info)'}; nats sync_always=False; "
        f"tag vector store {'on' if args.warm_tag_store else 'off (a new dataset)'}; "
        f"replicas: {', '.join(f'{k} x{v}' for k, v in replicas.items()) or 'one of each'}"
    )
    data = data_dir / "bench.jsonl"
    make = generate_realistic if args.corpus == "realistic" else generate
    planted = make(data, args.items, args.seed)
    print(
        f"  generated {planted.rows:,} rows ({planted.bytes / 2**20:,.1f} MiB) in "
        f"{planted.seconds:.1f}s: {planted.topics} topics, {planted.exact_duplicates} exact and "
        f"{planted.near_duplicates} near duplicates, {planted.contaminated} contaminated, "
        f"{planted.malformed} malformed"
        + (f", {planted.raw_tags:,} distinct raw tags" if planted.raw_tags else "")
    )
    stack = fake_stack(
        data_dir / "stack", log_level=args.log_level, env=env, service_env=service_env
    )
    result: Result | None = None
    with StackRun(stack, data_dir, args.keep, remove=False) as session:
        t0 = time.perf_counter()
        stack.start()
        for service, count in replicas.items():
            for _ in range(count - 1):
                stack.add_replica(service)
        print(f"  stack started in {time.perf_counter() - t0:.1f}s; logs in {stack.log_dir}")
        profiler = None
        if args.profile is not None:
            profiler = StepProfiler(dict(stack.processes())["selector"], args.profile)
        result = run(stack, args, data, planted, profiler)
        result.server_steps, result.clusters, result.deita_embedded = server_steps(
            sorted(stack.log_dir.glob("selector*.log")), result.job
        )
        if result.job["state"] != "succeeded":
            session.failed = True
            print(
                f"\nJOB {result.job['state'].upper()}: {result.job.get('error')}", file=sys.stderr
            )
            print_tails(stack)
    assert result is not None
    print_result(result, args)
    if profiler is not None:
        print_profiles(profiler)
    if args.embed_probe:
        print_probe(embed_probe(data, args.embed_probe), result, args)
    if not (session.failed or args.keep):
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(summary(result)))
    return 1 if session.failed else 0


if __name__ == "__main__":
    sys.exit(main())
