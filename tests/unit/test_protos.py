"""The committed stubs are exactly what protoc makes from protos/ (else: run `make protos`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*_pb2*")}
    committed = {
        p.relative_to(ROOT): p.read_bytes() for p in (ROOT / "taxoforge" / "v1").glob("*_pb2*")
    }
    assert fresh, "protoc produced nothing"
    assert set(fresh) == set(committed), "stub files differ in name: run `make protos`"
    stale = sorted(str(name) for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale stubs (run `make protos` and commit): {stale}"


def test_every_proto_has_its_stubs() -> None:
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    assert protos
    for proto in protos:
        stem = proto.stem
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (ROOT / "taxoforge" / "v1" / f"{stem}{suffix}").exists(), f"{stem}{suffix}"
