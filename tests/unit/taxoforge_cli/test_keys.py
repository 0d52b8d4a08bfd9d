"""``taxoforge keys new``: the key is printed once and only its hash is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.tenants import TenantRegistry
from taxoforge.keys import hash_key
from taxoforge_cli.main import main


def _new(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    main(["keys", "new", *args])
    return capsys.readouterr().out.strip()


def test_keys_go_to_the_file_as_hashes_and_the_gateway_accepts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tenants.yaml"
    first = _new(capsys, "--tenant", "acme", "--file", str(path), "--tokens", "1000")
    second = _new(capsys, "--tenant", "acme", "--file", str(path))
    other = _new(capsys, "--tenant", "globex", "--file", str(path), "--rate", "2")
    text = path.read_text()
    assert first not in text and second not in text and other not in text
    document = yaml.safe_load(text)
    acme = document["tenants"][0]
    assert acme["keys"] == [hash_key(first), hash_key(second)]
    assert acme["job_limit"] == {"tokens": 1000}
    assert path.stat().st_mode & 0o077 == 0  # readable by its owner only
    registry = TenantRegistry(path)
    assert [registry.authenticate(k).name for k in (first, second, other)] == [  # type: ignore[union-attr]
        "acme",
        "acme",
        "globex",
    ]


def test_without_a_file_the_entry_is_printed_to_paste(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["keys", "new", "--tenant", "acme"])
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert key.startswith("tfk_") and hash_key(key) in captured.err and key not in captured.err


def test_a_bad_tenant_name_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    with pytest.raises(SystemExit, match="name"):
        main(["keys", "new", "--tenant", "Not Valid", "--file", str(path)])
    assert not path.exists()
