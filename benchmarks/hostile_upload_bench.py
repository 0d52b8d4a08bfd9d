"""The selector's peak memory on hostile uploads: a gzip bomb, and a 50 MB row.

It starts the whole suite against the FAKE model server and runs one selection per upload
through the gateway, in this order, each with its selector peak measured on its own:

- ``jsonl-50mb-row``: normal rows with one row of 50 MB among them. That row is dropped as
  ``too_large`` with its row number (``meta/dropped.jsonl``) and the rest is selected. This
  first job also loads the selector's embedder (tag clustering), so the uploads after it are
  measured on a selector at its working size, the worst case.
- ``parquet-50mb-cell``: the same rows as Parquet (pyarrow's defaults), the 50 MB text in one
  cell. A Parquet page is unpacked whole, and this one is over the 32 MiB page limit: the file
  is refused, saying how to write it so that it can be read.
- ``parquet-20mb-cell``: a 20 MB cell in a page under the limit (no dictionary encoding): the
  page is read, and the row is dropped as ``too_large`` like the JSON Lines one.
- ``gzip-bomb``: a ~1 MB gzip of one valid row, 1 GiB of zeros on one line, then normal rows.
  The import is refused once it unpacks past 100 times its size; nothing is read whole.

Before each upload the selector's VmHWM (the kernel's peak RSS) is reset through
``/proc/<pid>/clear_refs``; after the job it is read back, and VmRSS is also sampled every
0.05 s in case the reset is not allowed. It prints, per upload, the job's outcome, the drops by
reason, whether every row is exported or dropped, and the selector's peak RSS against the
600 MB bound, and exits non-zero when a peak is over it.

Run: ``.venv/bin/python benchmarks/hostile_upload_bench.py`` (about a minute and a half on
2 cores, most of it starting the suite and writing the gzip).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from common import TERMINAL, fake_stack, file_chunks, memory_kib

from taxoforge_cli.stack import Stack

BOUND_MB = 600
NORMAL_ROWS = 40


def _row(n: int, answer: str | None = None) -> dict[str, Any]:
    topic = ("python, debugging", "astronomy")[n % 2]
    return {
        "messages": [
            {"role": "user", "content": f"Question number {n} about {topic}? [tags: {topic}]"},
            {"role": "assistant", "content": answer or f"Answer {n}. [quality: {40 + n}]"},
        ]
    }


def _line(row: dict[str, Any]) -> bytes:
    return json.dumps(row).encode() + b"\n"


def write_gzip_bomb(path: Path, zeros: int) -> None:
    """One valid row, ``zeros`` zero bytes on one line, then the normal rows, gzipped."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(_line(_row(0)))
        block = b"\0" * (1 << 20)
        for _ in range(zeros >> 20):
            f.write(block)
        f.write(b"\n")
        for n in range(1, NORMAL_ROWS):
            f.write(_line(_row(n)))


def big_rows(big: int) -> list[dict[str, Any]]:
    rows = [_row(n) for n in range(NORMAL_ROWS)]
    rows[NORMAL_ROWS // 2] = _row(NORMAL_ROWS // 2, "x" * big)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("wb") as f:
        for row in rows:
            f.write(_line(row))


def write_parquet(path: Path, rows: list[dict[str, Any]], dictionary: bool) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path, use_dictionary=dictionary)


# ---- memory ----


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Sampler:
    """The highest VmRSS of one process, sampled every ``period_s``."""

    def __init__(self, pid: int, period_s: float = 0.05) -> None:
        self.pid, self.period_s, self.peak_kib = pid, period_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, memory_kib(self.pid).get("VmRSS", 0))
            self._stop.wait(self.period_s)


# ---- one upload ----


@dataclass
class Outcome:
    name: str
    file_bytes: int
    state: str
    error: str
    rows: int
    dropped: Counter[str]
    exported: int
    wall_s: float
    peak_mb: float
    baseline_mb: float

    def accounted(self) -> str:
        if self.state != "succeeded":
            return "-"
        total = self.exported + sum(self.dropped.values())
        return f"{'yes' if total == self.rows else 'NO'} ({self.exported}+{total - self.exported})"


def run_one(api: httpx.Client, stack: Stack, name: str, path: Path, rows: int) -> Outcome:
    pid = dict(stack.processes())["selector"]
    resp = api.post("/v1/uploads", params={"name": path.name}, content=file_chunks(path))
    resp.raise_for_status()
    upload = resp.json()["upload"]
    time.sleep(0.5)
    baseline = memory_kib(pid).get("VmRSS", 0) / 1024
    hwm_reset = reset_peak(pid)
    started = time.perf_counter()
    with Sampler(pid) as sampler:
        resp = api.post(
            "/v1/selections",
            json={"name": name, "source": {"upload": upload}, "selection": {"clusters": 1}},
        )
        resp.raise_for_status()
        job_id = resp.json()["id"]
        while True:
            job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in TERMINAL:
                break
            time.sleep(0.2)
    wall = time.perf_counter() - started
    peak_kib = sampler.peak_kib
    if hwm_reset:
        peak_kib = max(peak_kib, memory_kib(pid).get("VmHWM", 0))
    dropped: Counter[str] = Counter()
    exported = 0
    if job["state"] == "succeeded":
        text = api.get(f"/v1/jobs/{job_id}/files/meta/dropped.jsonl").text
        dropped.update(json.loads(line)["reason"] for line in text.splitlines() if line.strip())
        exported = int(job["selection"].get("selected", 0))
    return Outcome(
        name=name,
        file_bytes=path.stat().st_size,
        state=job["state"],
        error=job.get("error", ""),
        rows=rows,
        dropped=dropped,
        exported=exported,
        wall_s=wall,
        peak_mb=peak_kib / 1024,
        baseline_mb=baseline,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zeros-mib", type=int, default=1024, help="zeros in the gzip bomb")
    parser.add_argument("--row-mb", type=int, default=50, help="size of the big row (MB)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="taxoforge-hostile-"))
    try:
        files = work / "files"
        files.mkdir()
        started = time.perf_counter()
        bomb = files / "bomb.jsonl.gz"
        write_gzip_bomb(bomb, args.zeros_mib << 20)
        rows = big_rows(args.row_mb * 1_000_000)
        jsonl, parquet = files / "big-row.jsonl", files / "big-cell.parquet"
        write_jsonl(jsonl, rows)
        write_parquet(parquet, rows, dictionary=True)
        rows = big_rows(20_000_000)
        smaller = files / "20mb-cell.parquet"
        write_parquet(smaller, rows, dictionary=False)
        del rows
        print(f"files written in {time.perf_counter() - started:.1f}s under {files}")
        cases = [
            ("jsonl-50mb-row", jsonl, NORMAL_ROWS),
            ("parquet-50mb-cell", parquet, NORMAL_ROWS),
            ("parquet-20mb-cell", smaller, NORMAL_ROWS),
            ("gzip-bomb", bomb, NORMAL_ROWS + 1),
        ]
        with (
            fake_stack(work / "stack") as stack,
            httpx.Client(base_url=stack.gateway_url, timeout=600) as api,
        ):
            outcomes = [run_one(api, stack, *case) for case in cases]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nselector peak RSS per upload (bound {BOUND_MB} MB; 1 MB = 2^20 bytes)")
    header = f"{'upload':<19} {'file':>10} {'state':<9} {'idle MB':>8} {'peak MB':>8} {'bound':<5}"
    print(header + f" {'wall s':>6}  every row exported or dropped")
    for o in outcomes:
        bound = "ok" if o.peak_mb < BOUND_MB else "OVER"
        print(
            f"{o.name:<19} {o.file_bytes:>10,} {o.state:<9} {o.baseline_mb:>8.0f} "
            f"{o.peak_mb:>8.0f} {bound:<5} {o.wall_s:>6.1f}  {o.accounted()}"
        )
    for o in outcomes:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(o.dropped.items())) or "-"
        print(f"\n{o.name}: {o.state}; dropped {drops}")
        if o.error:
            print(f"  error: {o.error}")
    return 0 if all(o.peak_mb < BOUND_MB for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
