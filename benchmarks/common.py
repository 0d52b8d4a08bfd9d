"""What the benchmarks share: reading a process's CPU and memory from /proc, the stack's
processes and logs, and the fake model server's control endpoints.

The benchmarks run as scripts (``.venv/bin/python benchmarks/x_bench.py``), so this folder is
first on ``sys.path`` and they import this module as ``common``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from taxoforge_cli.stack import PARTS, Stack, StackConfig

CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = {"succeeded", "failed", "cancelled"}  # the job states that end a job


class BenchError(RuntimeError):
    """A run failed, hung, or a process died."""


# ---- processes: CPU and memory ----


def speed_probe(repeat: int = 3) -> float:
    """Milliseconds of CPU a fixed pure-Python workload takes here (dicts, strings, JSON and a
    hash: the kinds of work the services do), the best of ``repeat``. The same machine runs it
    in a different time from one hour to the next; printed beside a benchmark's figures, it
    says how quick the machine was while they were taken (lower is quicker)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        words = [f"word{i % 977}" for i in range(60_000)]
        counts: dict[str, int] = {}
        for word in words:
            counts[word] = counts.get(word, 0) + 1
        text = " ".join(words)
        hashlib.sha256(text.encode()).hexdigest()
        json.loads(json.dumps([{"id": i, "text": w, "n": counts[w]} for i, w in enumerate(words)]))
        best = min(best, time.process_time() - start)
    return 1000 * best


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process (all its threads) and of every child process it started, from
    /proc: its own utime + stime, its ended children's (cutime + cstime, once reaped), and
    those of its children still running, so work a service hands to a child process (the
    selector's screening) counts as the service's."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = raw.rsplit(")", 1)[1].split()
    own = sum(int(v) for v in rest[11:15]) / CLK_TCK  # fields 14-17 of proc(5)
    return own + sum(cpu_seconds(child) or 0.0 for child in children(pid))


def children(pid: int) -> list[int]:
    """The process's running child processes (every thread's)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and of its running descendants, summed (KiB)."""
    own = memory_kib(pid).get("VmRSS", 0)
    return own + sum(tree_rss_kib(child) for child in children(pid))


def cpu_by_process(pids: Iterable[tuple[str, int]]) -> dict[str, float]:
    """CPU seconds so far of every (name, pid) still running, by name."""
    out: dict[str, float] = {}
    for name, pid in pids:
        value = cpu_seconds(pid)
        if value is not None:
            out[name] = value
    return out


def nats_messages(stack: Stack) -> dict[str, tuple[int, int]]:
    """Messages each client connection of the stack's nats-server has sent and received so far,
    by connection name (every service names its connection after itself)."""
    url = f"http://127.0.0.1:{stack.port('nats_monitor')}/connz?limit=4096"
    return messages_by_connection(httpx.get(url, timeout=10).json())


def messages_by_connection(connz: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(sent, received) by connection name from nats-server's ``/connz`` answer: each
    connection's ``in_msgs`` (what it published, requests and acks included) and ``out_msgs``
    (what the server delivered to it: replies, consumer deliveries), summed over the
    connections that share a name."""
    counts: dict[str, tuple[int, int]] = {}
    for conn in connz.get("connections") or []:
        name = str(conn.get("name") or "?")
        sent, received = counts.get(name, (0, 0))
        counts[name] = (sent + int(conn.get("in_msgs", 0)), received + int(conn.get("out_msgs", 0)))
    return counts


def stack_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of every running stack process, by name."""
    return cpu_by_process(stack.processes())


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process from /proc/<pid>/status, in KiB (empty once it is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# ---- the stack ----


def fake_stack(
    data_dir: Path,
    *,
    latency_ms: float = 0.0,
    log_level: str | None = None,
    env: dict[str, str] | None = None,
    service_env: dict[str, dict[str, str]] | None = None,
) -> Stack:
    """A stack (not started) against the FAKE model server, NATS without an fsync per write;
    ``log_level``, when given, is every process's TAXOFORGE_LOG_LEVEL."""
    env = dict(env or {})
    if log_level:
        env["TAXOFORGE_LOG_LEVEL"] = log_level
    config = StackConfig(
        data_dir=data_dir,
        llm="fake",
        fake_latency_ms=latency_ms,
        sync_always=False,
        env=env,
        service_env=service_env or {},
    )
    return Stack(config)


def dead_processes(stack: Stack) -> list[str]:
    """The stack's processes that have exited, with their exit codes."""
    return [f"{n} (exit {p.returncode})" for n, p in stack.procs.items() if p.poll() is not None]


def print_tails(stack: Stack, names: Iterable[str] = PARTS) -> None:
    """The end of every component's log, to stderr."""
    for name in names:
        path = stack.log_dir / f"{name}.log"
        if path.exists():
            print(f"--- {name}: {path} ---", file=sys.stderr)
            print(stack.tail(name, 30), file=sys.stderr)


class StackRun:
    """A benchmark's stack from start to stop, as ``with StackRun(...) as run:``.

    On an exception it prints ``failure`` and the end of every log; at the end it stops the
    stack and, unless the run failed (``run.failed``, also set by the caller for a failed job)
    or ``keep``, removes ``data_dir`` (only when ``remove``: a caller that still reads from
    it removes it itself).
    """

    def __init__(
        self,
        stack: Stack,
        data_dir: Path,
        keep: bool,
        *,
        failure: str = "FAILED",
        remove: bool = True,
    ) -> None:
        self.stack, self.data_dir, self.keep = stack, data_dir, keep
        self.failure, self.remove = failure, remove
        self.failed = False

    def __enter__(self) -> StackRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.failed = True
            print(f"\n{self.failure}", file=sys.stderr)
            print_tails(self.stack, list(self.stack.procs))
        self.stack.stop()
        if self.failed or self.keep:
            print(f"  data dir kept: {self.data_dir}", file=sys.stderr)
        elif self.remove:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """A file in chunks of ``size`` bytes, for a streamed upload."""
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


# ---- the fake model server's control endpoints ----


class FakeControl:
    """GET /_fake/stats, POST /_fake/reset of the fake the stack runs (blocking or async)."""

    def __init__(self, api_base: str) -> None:
        self.base = api_base.rstrip("/").removesuffix("/v1")

    @staticmethod
    def _stats(resp: httpx.Response) -> dict[str, Any]:
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        data.pop("by_request", None)  # one entry per distinct request: large and not needed
        return data

    def stats(self) -> dict[str, Any]:
        return self._stats(httpx.get(f"{self.base}/_fake/stats", timeout=30))

    def reset(self) -> None:
        httpx.post(f"{self.base}/_fake/reset", timeout=30).raise_for_status()

    async def astats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            return self._stats(await client.get(f"{self.base}/_fake/stats"))

    async def areset(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            (await client.post(f"{self.base}/_fake/reset")).raise_for_status()
