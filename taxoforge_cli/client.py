"""What every ``taxoforge`` command shares: the console, the gateway's HTTP API (its URL, the
API key, errors as one line) and following a job until it ends."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = [
    "TERMINAL",
    "CLIError",
    "auth_headers",
    "console",
    "gateway_url",
    "load_recipe",
    "request",
    "wait_for",
]

# Progress and notes; results go to stdout.
console = Console(stderr=True)
TERMINAL = {"succeeded", "failed", "cancelled"}


class CLIError(Exception):
    """A problem to report in one line, with exit code 1."""


def gateway_url(ns: argparse.Namespace) -> str:
    """The gateway: --gateway, else $TAXOFORGE_GATEWAY_URL, else the local stack's."""
    return str(ns.gateway or os.environ.get("TAXOFORGE_GATEWAY_URL") or "http://127.0.0.1:8080")


def auth_headers() -> dict[str, str]:
    """The API key from $TAXOFORGE_API_KEY, for a gateway that asks for one."""
    key = os.environ.get("TAXOFORGE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def request(method: str, url: str, timeout: float | None = 60.0, **kwargs: Any) -> httpx.Response:
    """One call to the gateway; an unreachable gateway or an error status is a CLIError."""
    kwargs["headers"] = {**auth_headers(), **kwargs.get("headers", {})}
    try:
        resp = httpx.request(method, url, timeout=timeout, **kwargs)
    except httpx.HTTPError as exc:
        raise CLIError(
            f"cannot reach the gateway at {url}: {exc} (is `taxoforge up` running?)"
        ) from exc
    if resp.status_code >= 400:
        try:
            err = resp.json().get("error", {})
            message = err.get("message") or resp.text
        except ValueError:
            message = resp.text
        raise CLIError(f"{method} {url} -> {resp.status_code}: {message}")
    return resp


def load_recipe(path: Path) -> dict[str, Any]:
    """Read a recipe file (YAML or JSON)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CLIError(f"cannot read recipe {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CLIError(f"recipe {path} must be a mapping (see examples/quickstart.yaml)")
    return data


def wait_for(gateway: str, job_id: str, quiet: bool = False) -> dict[str, Any]:
    """Poll the job, showing a progress bar, until it ends."""
    url = f"{gateway}/v1/jobs/{job_id}"
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task(job_id, total=None, detail="pending")
        while True:
            job: dict[str, Any] = request("GET", url).json()
            failed = sum(s["failed"] for s in job["stages"])
            work = " ".join(
                f"{s['stage']} {s['done']}"
                + (f"/{s['planned']}" if s.get("planned", 0) > 1 else "")
                for s in job["stages"]
                if s["stage"] not in ("plan", "select", "apply", "prepare", "cluster")
                and (s["done"] or s["failed"] or s.get("planned"))
            )
            if job.get("step"):
                work = f"step {job['step']} | {work}"
            detail = (
                f"{job['state']} | {work}"
                + (f" failed {failed}" if failed else "")
                + f" | {job['usage']['calls']} calls"
            )
            bar.update(task, total=job["planned"] or None, completed=job["finished"], detail=detail)
            if job["state"] in TERMINAL:
                return job
            time.sleep(1.0)
