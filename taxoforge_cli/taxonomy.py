"""``taxoforge taxonomy ...``: read, print, version, edit, expand, induce and plan taxonomies."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from taxoforge_cli.client import CLIError, console, gateway_url, load_recipe, request, wait_for

__all__ = ["add_taxonomy_commands", "read_instructions", "render_tree"]

_SESSION = "session"
# Results go to stdout (pipe them); progress and notes go to the shared console on stderr.
out = Console(soft_wrap=True)


def render_tree(taxonomy: dict[str, Any], depth: int = 0, concepts: bool = False) -> Tree:
    """A taxonomy as a tree a person can read: titles, ids, weights, proposals, syllabi."""
    root = taxonomy["root"]
    title = taxonomy.get("title") or taxonomy["id"]
    tree = Tree(f"[bold]{title}[/bold] [dim]{taxonomy['id']} v{taxonomy.get('version', '?')}[/dim]")

    def add(branch: Tree, node: dict[str, Any], level: int) -> None:
        children = node.get("children", [])
        sessions = [c for c in children if c.get("kind") == _SESSION]
        others = [c for c in children if c.get("kind") != _SESSION]
        for child in others:
            parts = [child["title"], f"[dim]{child['id']}[/dim]"]
            if child.get("weight", 1.0) != 1.0:
                parts.append(f"[cyan]w={child['weight']:g}[/cyan]")
            if child.get("status") == "NODE_STATUS_PROPOSED":
                parts.append("[yellow](proposed)[/yellow]")
            sub_sessions = [c for c in child.get("children", []) if c.get("kind") == _SESSION]
            if sub_sessions:
                parts.append(f"[magenta]{len(sub_sessions)} sessions[/magenta]")
            twig = branch.add(" ".join(parts))
            if depth == 0 or level + 1 < depth:
                add(twig, child, level + 1)
            elif child.get("children"):
                twig.add(f"[dim]... {len(child['children'])} below[/dim]")
        if concepts:
            for session in sessions:
                items = session.get("attributes", {}).get("key_concepts", {}).get("items", [])
                branch.add(f"[magenta]{session['title']}[/magenta]: {', '.join(items)}")

    add(tree, root, 0)
    return tree


def read_instructions(path: Path) -> list[str]:
    """Instructions from a file: JSONL of strings, {"instruction"}, {"prompt"}, {"messages"},
    or {"conversations"} (first user turn); or plain text, one per line."""
    out: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        text = _instruction_of(value)
        if not text:
            raise CLIError(f"{path}:{number}: no instruction found in this row")
        out.append(text)
    return out


def _instruction_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        return ""
    for key in ("instruction", "prompt", "question", "input", "text"):
        if isinstance(value.get(key), str) and value[key].strip():
            extra = value.get("input") if key == "instruction" else None
            text: str = value[key]
            return text + (f"\n\n{extra}" if isinstance(extra, str) and extra else "")
    for key, role_key, user in (("messages", "role", "user"), ("conversations", "from", "human")):
        for turn in value.get(key) or []:
            if isinstance(turn, dict) and turn.get(role_key) == user:
                said = turn.get("content") or turn.get("value")
                if isinstance(said, str):
                    return said
    return ""


def _show(ns: argparse.Namespace) -> None:
    params = {"version": ns.version} if ns.version else {}
    taxonomy = request("GET", f"{gateway_url(ns)}/v1/taxonomies/{ns.id}", params=params).json()
    if ns.json:
        print(json.dumps(taxonomy, indent=2))
        return
    out.print(render_tree(taxonomy, ns.depth, ns.concepts))


def _list(ns: argparse.Namespace) -> None:
    listing = request("GET", f"{gateway_url(ns)}/v1/taxonomies").json()
    table = Table("id", "version", "leaves", "title")
    for t in listing.get("taxonomies", []):
        table.add_row(t["id"], t["version"], str(t.get("leaves", 0)), t.get("title", ""))
    out.print(table)


def _versions(ns: argparse.Namespace) -> None:
    index = request("GET", f"{gateway_url(ns)}/v1/taxonomies/{ns.id}/versions").json()
    table = Table("version", "parent", "nodes", "leaves", "proposed", "change")
    for v in index.get("versions", []):
        table.add_row(
            v["version"],
            v.get("parent_version", ""),
            str(v.get("nodes", 0)),
            str(v.get("leaves", 0)),
            str(v.get("proposed", 0)),
            v.get("change", ""),
        )
    out.print(table)


def _import(ns: argparse.Namespace) -> None:
    body = Path(ns.file).read_bytes()
    params = {"new_version": "true"} if ns.new_version else {}
    result = request(
        "POST",
        f"{gateway_url(ns)}/v1/taxonomies",
        content=body,
        headers={"content-type": "application/yaml"},
        params=params,
    ).json()
    console.print(f"imported {result['id']} as version {result['version']}")


def _export(ns: argparse.Namespace) -> None:
    params = {"version": ns.version} if ns.version else {}
    text = request("GET", f"{gateway_url(ns)}/v1/taxonomies/{ns.id}/export", params=params).text
    if ns.output:
        Path(ns.output).write_text(text, encoding="utf-8")
        console.print(f"wrote {ns.output}")
    else:
        sys.stdout.write(text)


def _review(ns: argparse.Namespace) -> None:
    body = {
        "accept": _ids(ns.accept),
        "reject": _ids(ns.reject),
        "accept_rest": ns.accept_rest,
        "base_version": ns.base_version or "",
    }
    result = request("POST", f"{gateway_url(ns)}/v1/taxonomies/{ns.id}:review", json=body).json()
    console.print(f"{ns.id} version {result['version']}: {result['change']}")


def _ids(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _finish(ns: argparse.Namespace, job: dict[str, Any]) -> None:
    console.print(f"started job {job['id']} ({job['kind']}, {job['planned']} items)")
    if ns.no_wait:
        print(job["id"])
        return
    job = wait_for(gateway_url(ns), job["id"])
    if job["state"] != "succeeded":
        raise CLIError(f"job {job['id']} {job['state']}: {job.get('error')}")
    console.print(f"taxonomy version {job['result_taxonomy_version']} is ready")
    if job.get("induction"):
        report = job["induction"]
        console.print(
            f"encoded {report.get('encoded', 0)} of {report.get('instructions', 0)} instructions: "
            f"{report.get('use_cases', 0)} use cases, {report.get('skills', 0)} skills; "
            f"{len(report.get('merges', []))} merges, {len(report.get('dropped', []))} dropped"
        )
        for merge in report.get("merges", [])[:20]:
            merged = ", ".join(merge["merged"])
            console.print(f"  into [bold]{merge['into']}[/bold] ({merge['kind']}): {merged}")


def _expand(ns: argparse.Namespace) -> None:
    body = {
        "nodes": _ids(ns.nodes),
        "levels": ns.levels,
        "samples": ns.samples,
        "max_children": ns.max_children,
    }
    job = request("POST", f"{gateway_url(ns)}/v1/taxonomies/{ns.id}:expand", json=body).json()
    _finish(ns, job)
    if not ns.no_wait:
        console.print(
            f"review the proposals: taxoforge taxonomy show {ns.id}, then "
            f"taxoforge taxonomy review {ns.id} --accept ... --reject ..."
        )


def _induce(ns: argparse.Namespace) -> None:
    instructions = read_instructions(Path(ns.file))
    body = {
        "taxonomy_id": ns.id,
        "title": ns.title or ns.id,
        "instructions": instructions,
        "min_frequency": ns.min_frequency,
        "merge_threshold": ns.merge_threshold,
    }
    job = request("POST", f"{gateway_url(ns)}/v1/inductions", json=body).json()
    _finish(ns, job)


def _plan(ns: argparse.Namespace) -> None:
    recipe = load_recipe(Path(ns.recipe))
    plan = request("POST", f"{gateway_url(ns)}/v1/plans", json=recipe).json()
    if ns.json:
        print(json.dumps(plan, indent=2))
        return
    console.print(f"{plan['planned']} seeds on taxonomy version {plan['taxonomy_version']}")
    by_dimension: dict[str, list[dict[str, Any]]] = {}
    for total in plan.get("totals", []):
        by_dimension.setdefault(total["dimension"], []).append(total)
    for dimension, totals in by_dimension.items():
        table = Table(dimension, "seeds", "share")
        for t in sorted(totals, key=lambda t: -t["count"]):
            table.add_row(t["value"], str(t["count"]), f"{t['count'] / plan['planned']:.1%}")
        out.print(table)


def add_taxonomy_commands(sub: Any) -> None:
    """Register ``taxoforge taxonomy`` and its subcommands."""
    top = sub.add_parser(
        "taxonomy", help="taxonomies: show, versions, import, export, expand, induce, review, plan"
    )
    tsub = top.add_subparsers(dest="taxonomy_command", required=True)

    def add(
        name: str, help_text: str, func: Callable[[argparse.Namespace], None]
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = tsub.add_parser(name, help=help_text)
        p.add_argument(
            "--gateway",
            help="gateway URL (default $TAXOFORGE_GATEWAY_URL or http://127.0.0.1:8080)",
        )
        p.set_defaults(func=func)
        return p

    add("list", "list taxonomies", _list)
    p = add("show", "print a taxonomy as a tree", _show)
    p.add_argument("id")
    p.add_argument("--version", default="")
    p.add_argument("--depth", type=int, default=0, help="levels to print (0: all)")
    p.add_argument(
        "--concepts", action="store_true", help="print syllabus sessions and key concepts"
    )
    p.add_argument("--json", action="store_true")
    p = add("versions", "a taxonomy's versions", _versions)
    p.add_argument("id")
    p = add("import", "import a YAML/JSON taxonomy file", _import)
    p.add_argument("file")
    p.add_argument(
        "--new-version", action="store_true", help="add as a new version of an existing id"
    )
    p = add("export", "a version as YAML", _export)
    p.add_argument("id")
    p.add_argument("--version", default="")
    p.add_argument("-o", "--output")
    p = add("expand", "GLAN expansion of nodes with an LLM (subjects, syllabi)", _expand)
    p.add_argument("id")
    p.add_argument("--nodes", required=True, help="comma-separated node ids")
    p.add_argument("--levels", type=int, default=1, help="2: subjects, then their syllabi")
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--max-children", type=int, default=12)
    p.add_argument("--no-wait", action="store_true")
    p = add("review", "accept or reject proposed nodes", _review)
    p.add_argument("id")
    p.add_argument("--accept", help="comma-separated node ids")
    p.add_argument("--reject", help="comma-separated node ids")
    p.add_argument("--accept-rest", action="store_true")
    p.add_argument("--base-version")
    p = add("induce", "induce a taxonomy from a file of instructions", _induce)
    p.add_argument("file", help="JSONL (strings, instruction/prompt/messages rows) or text lines")
    p.add_argument("--id", required=True, help="the new taxonomy's id")
    p.add_argument("--title")
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--merge-threshold", type=float, default=0.85)
    p.add_argument("--no-wait", action="store_true")
    p = add("plan", "dry-run a recipe: seeds per node, language, difficulty, task type", _plan)
    p.add_argument("recipe")
    p.add_argument("--json", action="store_true")
