"""The ``taxoforge`` command: run the stack, submit recipes, watch jobs, fetch datasets."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from taxoforge.selection import IMPORT_SHAPES, QUOTA_RULES, SELECTION_METHODS
from taxoforge_cli.client import (
    CLIError,
    auth_headers,
    console,
    gateway_url,
    load_recipe,
    request,
    wait_for,
)
from taxoforge_cli.keys import add_keys_commands
from taxoforge_cli.stack import Stack, StackConfig, StackError
from taxoforge_cli.taxonomy import add_taxonomy_commands

__all__ = ["download", "main", "print_samples", "print_summary", "submit", "upload"]


def submit(gateway: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """POST the recipe; returns the job."""
    job: dict[str, Any] = request("POST", f"{gateway}/v1/jobs", json=recipe).json()
    return job


def download(gateway: str, job: dict[str, Any], out: Path) -> list[Path]:
    """Write the job's files into ``out`` as a Hugging Face dataset folder (README.md,
    images/, data/, meta/) with a summary; returns the JSON Lines exports."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset in job["datasets"]:
        path = out / dataset["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"{gateway}{dataset['url']}"
        with httpx.stream("GET", url, timeout=300.0, headers=auth_headers()) as resp:
            if resp.status_code != 200:
                raise CLIError(f"download of {dataset['path']} failed: {resp.status_code}")
            with path.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
        if dataset["path"].startswith("data/") and dataset["format"] == "jsonl":
            paths.append(path)
    (out / "summary.json").write_text(json.dumps(job, indent=2, ensure_ascii=False) + "\n")
    return paths


def upload(gateway: str, path: Path) -> str:
    """Stream a local file to the gateway; returns its upload id."""

    def _chunks() -> Iterator[bytes]:
        with path.open("rb") as fh:
            yield from iter(lambda: fh.read(1 << 20), b"")

    if not path.is_file():
        raise CLIError(f"{path} is not a file")
    resp = request(
        "POST",
        f"{gateway}/v1/uploads",
        params={"name": path.name},
        timeout=None,
        content=_chunks(),
        headers={"Content-Type": "application/octet-stream"},
    )
    return str(resp.json()["upload"])


def print_summary(job: dict[str, Any], paths: list[Path], out: Path | None = None) -> None:
    """The job's outcome in a few lines, and what was written to ``out`` (its files)."""
    table = Table(title=f"job {job['id']} ({job['name']}): {job['state']}", show_header=True)
    for col in ("stage", "done", "failed"):
        table.add_column(col)
    for stage in job["stages"]:
        table.add_row(stage["stage"], str(stage["done"]), str(stage["failed"]))
    console.print(table)
    usage = job["usage"]
    console.print(
        f"model calls {usage['calls']}, tokens in {usage['prompt_tokens']} "
        f"out {usage['completion_tokens']}, cost ${usage['cost_usd']:.4f}"
    )
    composition = job.get("composition")
    if composition:
        print_composition(composition)
    if job.get("error"):
        console.print(f"[red]error:[/red] {job['error']}")
    if out is not None and job["datasets"]:
        written = {d["path"] for d in job["datasets"]}
        parts = ["README.md (dataset card)"] if "README.md" in written else []
        if paths:
            parts.append(f"data/ ({len(paths)} formats, JSON Lines and Parquet)")
        parts += sorted(p for p in written if p.startswith("meta/"))
        console.print(f"wrote {out}: {', '.join(parts)}")


def print_composition(composition: dict[str, Any]) -> None:
    """Plan against delivery per language and difficulty, the short cells, and why items
    were not delivered."""
    pairs = composition["preference_promised"]
    table = Table(title="plan vs delivered", show_header=True)
    for col in ("language", "difficulty", "planned", "sft", *(["preference"] if pairs else [])):
        table.add_column(col)
    groups: dict[tuple[str, str], list[int]] = {}
    reasons: dict[str, int] = {}
    for cell in composition["cells"]:
        row = groups.setdefault((cell["language"], cell["difficulty"] or "-"), [0, 0, 0])
        row[0] += cell["planned"]
        row[1] += cell["sft"]
        row[2] += cell["preference"]
        for reason, n in cell["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    for (language, difficulty), (planned, sft, preference) in sorted(groups.items()):
        cols = [language, difficulty, str(planned), str(sft)]
        table.add_row(*cols, *([str(preference)] if pairs else []))
    table.add_row(
        "all",
        "",
        str(composition["planned"]),
        str(composition["sft"]),
        *([str(composition["preference"])] if pairs else []),
    )
    console.print(table)
    console.print(
        f"items generated {composition['candidates']} of at most "
        f"{composition['max_candidates']} ({composition['rounds']} top-up rounds)"
    )
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        console.print("not delivered, by reason: " + ", ".join(f"{r} {n}" for r, n in top))
    if composition["short"]:
        short = composition["short_cells"]
        console.print(
            f"[yellow]short:[/yellow] {len(short)} of {len(composition['cells'])} cells below "
            f"plan" + (f"; {composition['stopped']}" if composition.get("stopped") else "")
        )


def print_samples(paths: list[Path], n: int = 2) -> None:
    """A few records of the TRL SFT and preference exports, shortened."""
    for path in paths:
        if path.name not in ("sft.jsonl", "preference.jsonl"):
            continue
        console.rule(f"{path.name}: first {n} records")
        with path.open(encoding="utf-8") as fh:
            for _, line in zip(range(n), fh, strict=False):
                record = json.loads(line)
                record.pop("metadata", None)
                text = json.dumps(record, ensure_ascii=False, indent=1)
                console.print(text if len(text) < 1500 else text[:1500] + " ...", markup=False)


def _stack_config(ns: argparse.Namespace, data_dir: Path) -> StackConfig:
    llm = ns.llm
    api_base = os.environ.get("TAXOFORGE_LLM_API_BASE")
    if llm == "auto":
        llm = "external" if api_base else "embedded"
    return StackConfig(
        data_dir=data_dir,
        llm=llm,
        llm_api_base=api_base,
        llm_model=os.environ.get("TAXOFORGE_LLM_MODEL"),
        nats_port=getattr(ns, "nats_port", 0),
        gateway_port=getattr(ns, "port", 0),
        llm_port=getattr(ns, "llm_port", 0),
    )


def cmd_up(ns: argparse.Namespace) -> None:
    """Run the stack until Ctrl-C."""
    stack = Stack(_stack_config(ns, Path(ns.data_dir)))
    console.print(f"starting the stack in {stack.data_dir} (logs in {stack.log_dir}) ...")
    stack.start()
    console.print(
        f"[green]ready[/green]: gateway {stack.gateway_url} "
        f"(API docs {stack.gateway_url}/docs), NATS {stack.nats_url}, model {stack.llm_api_base}"
    )
    console.print(f"console: {stack.gateway_url}/ui/")
    _serve(stack)


def demo_serves(asked: bool | None, terminal: bool) -> bool:
    """Whether the demo keeps its stack serving the console after the job: as asked
    (--serve/--no-serve), else only when run from a terminal (a script or CI must end)."""
    return asked if asked is not None else terminal


def _serve(stack: Stack) -> None:
    """Keep ``stack`` running until Ctrl-C (or one of its processes exits), then stop it."""
    console.print("press Ctrl-C to stop")
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            for name, proc in list(stack.procs.items()):
                if proc.poll() is not None:
                    console.print(
                        f"[red]{name} exited with {proc.returncode}[/red]:\n{stack.tail(name)}"
                    )
                    stopping = True
            time.sleep(0.5)
    finally:
        console.print("stopping ...")
        stack.stop()
        console.print("stopped")


def cmd_run(ns: argparse.Namespace) -> None:
    """Submit a recipe and wait for its datasets."""
    gateway = gateway_url(ns)
    recipe = load_recipe(Path(ns.recipe))
    job = submit(gateway, recipe)
    console.print(f"submitted job {job['id']} ({recipe.get('count')} items)")
    _follow(gateway, job, ns)


def _follow(gateway: str, job: dict[str, Any], ns: argparse.Namespace) -> None:
    """After a submission: print the id (--no-wait), or wait, download and summarize."""
    if ns.no_wait:
        print(job["id"])
        return
    job = wait_for(gateway, job["id"])
    out = Path(ns.out) / job["id"]
    # A job that failed for want of anything to select still lists why (meta/dropped.jsonl).
    paths = download(gateway, job, out) if job["datasets"] else []
    print_summary(job, paths, out)
    if job["state"] != "succeeded":
        raise CLIError(f"job {job['id']} {job['state']}")
    print(out)


def cmd_status(ns: argparse.Namespace) -> None:
    """Print a job as JSON."""
    job = request("GET", f"{gateway_url(ns)}/v1/jobs/{ns.job}").json()
    print(json.dumps(job, indent=2))


def cmd_export(ns: argparse.Namespace) -> None:
    """Download a finished job's datasets."""
    gateway = gateway_url(ns)
    job = request("GET", f"{gateway}/v1/jobs/{ns.job}").json()
    if job["state"] != "succeeded" and not job["datasets"]:
        raise CLIError(f"job {ns.job} is {job['state']}; datasets exist once it has succeeded")
    out = Path(ns.out) / ns.job
    paths = download(gateway, job, out)
    print_summary(job, paths, out)


def cmd_select(ns: argparse.Namespace) -> None:
    """Upload a dataset, select from it (dedup, decontamination, TACOS), write the exports."""
    gateway = gateway_url(ns)
    selection: dict[str, Any] = load_recipe(Path(ns.selection)) if ns.selection else {}
    for key in ("budget", "method", "quota", "budget_unit", "comparison_budget"):
        value = getattr(ns, key)
        if value is not None:
            selection[key] = value
    if ns.decontaminate:
        selection["decontaminate"] = ns.decontaminate
    source: dict[str, Any] = {"shape": ns.shape}
    if ns.source.startswith(("http://", "https://")):
        source["url"] = ns.source
    else:
        console.print(f"uploading {ns.source} ...")
        source["upload"] = upload(gateway, Path(ns.source))
    body = {"name": ns.name or Path(ns.source).name, "source": source, "selection": selection}
    job = request("POST", f"{gateway}/v1/selections", json=body).json()
    console.print(f"submitted selection job {job['id']}")
    _follow(gateway, job, ns)


def cmd_benchmark(ns: argparse.Namespace) -> None:
    """Register, list or remove benchmarks that selection decontaminates against."""
    gateway = gateway_url(ns)
    if ns.action == "list":
        for bench in request("GET", f"{gateway}/v1/benchmarks").json()["benchmarks"]:
            print(f"{bench['name']}\t{bench['bytes']}")
        return
    if not ns.name:
        raise CLIError(f"benchmark {ns.action} needs a name")
    if ns.action == "remove":
        request("DELETE", f"{gateway}/v1/benchmarks/{ns.name}")
        console.print(f"removed {ns.name}")
        return
    if not ns.file:
        raise CLIError("benchmark add needs a file of prompts")
    data = Path(ns.file).read_bytes()
    # A file that yields no prompt is refused (422, saying why): the CLIError prints it.
    info = request("PUT", f"{gateway}/v1/benchmarks/{ns.name}", content=data).json()
    prompts = info.get("prompts")
    counted = f"{prompts} prompts, " if isinstance(prompts, int) else ""
    console.print(f"registered {info['name']} ({counted}{info['bytes']} bytes)")


def cmd_cancel(ns: argparse.Namespace) -> None:
    """Cancel a job."""
    job = request("POST", f"{gateway_url(ns)}/v1/jobs/{ns.job}:cancel").json()
    console.print(f"job {job['id']}: {job['state']}")


def cmd_demo(ns: argparse.Namespace) -> None:
    """Start the stack on free ports, run the quickstart, show samples, stop everything."""
    data_dir = (
        Path(ns.data_dir) if ns.data_dir else Path(tempfile.mkdtemp(prefix="taxoforge-demo-"))
    )
    stack = Stack(_stack_config(ns, data_dir))
    console.print(
        "starting the embedded stack (model server, NATS, 4 services, gateway); "
        f"logs in {stack.log_dir}"
    )
    with stack:
        console.print(f"[green]stack ready[/green] at {stack.gateway_url}")
        recipe = load_recipe(Path(ns.recipe))
        job = submit(stack.gateway_url, recipe)
        console.print(f"running {ns.recipe}: job {job['id']}, {recipe.get('count')} items")
        job = wait_for(stack.gateway_url, job["id"])
        out = Path(ns.out) / job["id"]
        paths = download(stack.gateway_url, job, out) if job["datasets"] else []
        print_summary(job, paths, out)
        print_samples(paths)
        page = f"{stack.gateway_url}/ui/jobs/{job['id']}"
        # The console link works while the stack runs: an interactive demo keeps serving it
        # until Ctrl-C; a scripted one (no terminal, or --no-serve) stops when the job is done.
        if demo_serves(ns.serve, sys.stdin.isatty()):
            console.print(f"console: {page}")
            _serve(stack)
        else:
            console.print(f"console (while the stack runs; `taxoforge demo --serve`): {page}")
            console.print("stopping the stack ...")
    if job["state"] != "succeeded":
        raise CLIError(f"demo job {job['state']}: {job.get('error')}; logs in {stack.log_dir}")
    if not ns.data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)  # a temporary store, its job exported
    console.print(f"[green]done[/green]: datasets in {out}")


def cmd_models(ns: argparse.Namespace) -> None:
    """Make the files the local embedder derives from the installed model, once, where
    taxoforge is installed (``make install`` and the image's build run this)."""
    del ns
    from taxoforge.embeddings import make_model_files
    from taxoforge.minilm import MiniLMNotInstalled

    start = time.perf_counter()
    try:
        files = make_model_files()
    except MiniLMNotInstalled as exc:
        raise CLIError(str(exc)) from None
    for path in files:
        console.print(f"{path}  {path.stat().st_size / 2**20:.1f} MiB", soft_wrap=True)
    console.print(f"{len(files)} model files ready in {time.perf_counter() - start:.1f} s")


def cmd_fake_llm(ns: argparse.Namespace) -> None:
    """Serve the FAKE model server (tests and benchmarks)."""
    from taxoforge.testing.fake_llm import main as fake_main

    fake_main(["--port", str(ns.port), "--latency-ms", str(ns.latency_ms)])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taxoforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_taxonomy_commands(sub)
    add_keys_commands(sub)

    def gateway_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--gateway",
            help="gateway URL (default $TAXOFORGE_GATEWAY_URL or http://127.0.0.1:8080)",
        )

    def llm_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--llm",
            choices=["auto", "embedded", "fake", "external"],
            default="auto",
            help="model server: embedded SmolLM2 (default), "
            "or external when $TAXOFORGE_LLM_API_BASE is set",
        )

    def job_command(name: str, summary: str, func: Callable[[argparse.Namespace], None]) -> None:
        """A command on one job, by id, through the gateway."""
        p = sub.add_parser(name, help=summary)
        p.add_argument("job")
        gateway_opt(p)
        p.set_defaults(func=func)

    p = sub.add_parser("up", help="run nats-server, the model server, the services and the gateway")
    p.add_argument("--data-dir", default=".taxoforge", help="JetStream store and logs")
    p.add_argument("--port", type=int, default=8080, help="gateway port")
    p.add_argument("--nats-port", type=int, default=4222)
    p.add_argument("--llm-port", type=int, default=8081)
    llm_opt(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("run", help="submit a recipe, show progress, write the datasets")
    p.add_argument("recipe", help="recipe YAML/JSON, e.g. examples/quickstart.yaml")
    p.add_argument("--out", default="out", help="output folder (a subfolder per job)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    gateway_opt(p)
    p.set_defaults(func=cmd_run)

    job_command("status", "show a job", cmd_status)

    p = sub.add_parser("export", help="download a finished job's dataset folder")
    p.add_argument("job")
    p.add_argument("--out", default="out")
    gateway_opt(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "select", help="select from your own dataset: dedup, decontamination, TACOS, exports"
    )
    p.add_argument("source", help="a JSON Lines or Parquet file, or an http(s) URL")
    p.add_argument("--name", default=None)
    p.add_argument("--budget", type=int, default=None, help="records (or tokens) to keep")
    p.add_argument("--budget-unit", dest="budget_unit", choices=["records", "tokens"])
    p.add_argument("--method", choices=SELECTION_METHODS)
    p.add_argument("--quota", choices=QUOTA_RULES)
    p.add_argument("--comparison-budget", dest="comparison_budget", type=int, default=None)
    p.add_argument("--decontaminate", nargs="*", default=[], help="registered benchmarks")
    p.add_argument(
        "--shape",
        default="auto",
        choices=["auto", *IMPORT_SHAPES],
    )
    p.add_argument("--selection", help="a YAML/JSON file with the whole selection object")
    p.add_argument("--out", default="out", help="output folder (a subfolder per job)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    gateway_opt(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("benchmark", help="benchmarks selection decontaminates against")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("name", nargs="?")
    p.add_argument("file", nargs="?", help="prompts: JSON Lines, Parquet or one per line")
    gateway_opt(p)
    p.set_defaults(func=cmd_benchmark)

    job_command("cancel", "cancel a job", cmd_cancel)

    p = sub.add_parser("demo", help="start the embedded stack, run the quickstart, stop")
    p.add_argument("--recipe", default="examples/quickstart.yaml")
    p.add_argument("--out", default="out")
    p.add_argument("--data-dir", default=None, help="default: a new temporary folder")
    llm_opt(p)
    p.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the stack running after the job, serving its console page, until Ctrl-C "
        "(default: when run from a terminal)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "models",
        help="make the local embedder's files (ONNX graph, static table) where taxoforge is "
        "installed, so no job pays for them (make install and the image run this)",
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("fake-llm", help="serve the FAKE model server used by tests and benchmarks")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.set_defaults(func=cmd_fake_llm)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``taxoforge`` command."""
    ns = _parser().parse_args(argv)
    try:
        ns.func(ns)
    except (CLIError, StackError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
