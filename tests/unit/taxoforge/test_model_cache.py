"""Files made once per machine: named by a content hash, written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taxoforge import model_cache
from taxoforge.model_cache import content_hash, write_atomically


def test_the_hash_follows_the_files_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"weights")
    (tmp_path / "b").write_bytes(b"config")
    first = content_hash(tmp_path, ("a", "b"))
    assert content_hash(tmp_path, ("a", "b")) == first
    assert content_hash(tmp_path, ("b", "a")) != first
    (tmp_path / "a").write_bytes(b"weights, retrained")
    os.utime(tmp_path / "a", ns=(1, 1))  # a new stamp, as a reinstall gives
    assert content_hash(tmp_path, ("a", "b")) != first


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "table.bin"
    assert write_atomically(path, lambda fh: fh.write(b"old"))
    assert path.read_bytes() == b"old"

    def crash(fh: object) -> None:
        fh.write(b"half")  # type: ignore[attr-defined]
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomically(path, crash)
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["table.bin"]


def test_an_unwritable_directory_is_reported_not_raised(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert not write_atomically(blocked / "sub" / "x", lambda fh: fh.write(b"x"))


def test_the_cache_dir_defaults_under_the_users_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert model_cache.default_cache_dir() == Path("/somewhere/taxoforge")
