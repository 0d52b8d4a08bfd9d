"""Services reach NATS over TLS with credentials, as the cluster manifests deploy them."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from pydantic import SecretStr

from taxoforge.bus import Bus
from taxoforge.bus.connection import tls_context
from taxoforge.settings import BusSettings
from taxoforge_cli.stack import _nats_server_binary, free_port

pytestmark = pytest.mark.integration


@dataclass
class TlsServer:
    url: str
    ca: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    _openssl(*ca, "-subj", "/CN=taxoforge CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
                 "-out", f"{name}.crt", cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """nats-server with JetStream that takes only TLS clients with a certificate from its CA,
    and only the user ``taxoforge`` with its password."""
    folder = tmp_path_factory.mktemp("nats-tls")
    _certificates(folder)
    port, monitor = free_port(), free_port()
    (folder / "nats.conf").write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"http: 127.0.0.1:{monitor}\n"
        f'jetstream {{ store_dir: "{folder / "js"}" }}\n'
        "tls {\n"
        f'  cert_file: "{folder / "server.crt"}"\n'
        f'  key_file: "{folder / "server.key"}"\n'
        f'  ca_file: "{folder / "ca.crt"}"\n'
        "  verify: true\n"
        "}\n"
        'authorization { user: "taxoforge", password: "s3cret-pass" }\n'
    )
    proc = subprocess.Popen(
        [_nats_server_binary(), "-c", str(folder / "nats.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nats-server with TLS did not start"
                time.sleep(0.1)
        yield TlsServer(
            url=f"tls://127.0.0.1:{port}",
            ca=folder / "ca.crt",
            client_cert=folder / "client.crt",
            client_key=folder / "client.key",
        )
    finally:
        proc.terminate()
        proc.wait(10)


def _settings(server: TlsServer, **changes: object) -> BusSettings:
    values: dict[str, object] = {
        "nats_url": server.url,
        "nats_user": "taxoforge",
        "nats_password": SecretStr("s3cret-pass"),
        "nats_tls_ca_file": str(server.ca),
        "nats_tls_cert_file": str(server.client_cert),
        "nats_tls_key_file": str(server.client_key),
    }
    values.update(changes)
    return BusSettings.model_validate(values)


async def _connect_once(settings: BusSettings) -> Bus:
    # Bus.connect retries forever (right for a service); a test needs the first failure.
    options: dict[str, object] = {
        "servers": [settings.nats_url],
        "allow_reconnect": False,
        "connect_timeout": 3,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
    if settings.nats_password:
        options["password"] = settings.nats_password.get_secret_value()
    tls = tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    nc = await nats.connect(**options)
    return Bus(nc, settings)


async def test_a_service_connects_with_tls_and_credentials(tls_nats: TlsServer) -> None:
    bus = await Bus.connect(_settings(tls_nats), name="tls-test")
    try:
        await bus.ensure_topology()
        kv = await bus.jobs_kv()
        await kv.put("tls.check", b"ok")
        assert (await kv.get("tls.check")).value == b"ok"
        assert bus.nc.connected_url is not None and bus.nc.connected_url.scheme == "tls"
    finally:
        await bus.close()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"nats_password": SecretStr("wrong")}, "a wrong password"),
        ({"nats_tls_ca_file": None, "nats_tls_cert_file": None}, "no CA, no client cert"),
        ({"nats_tls_cert_file": None}, "no client certificate"),
    ],
)
async def test_the_server_refuses(tls_nats: TlsServer, change: dict[str, object], why: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - nats-py raises several kinds
        bus = await _connect_once(_settings(tls_nats, **change))
        await bus.close()
        pytest.fail(f"connected with {why}")


def test_a_client_certificate_needs_its_key(tls_nats: TlsServer) -> None:
    with pytest.raises(ValueError, match="KEY_FILE"):
        tls_context(_settings(tls_nats, nats_tls_key_file=None))
