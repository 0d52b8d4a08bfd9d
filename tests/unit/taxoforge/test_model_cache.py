"""Files made once per machine: named by a content hash, written whole or not at all, made at
install by `taxoforge models` and found there."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from taxoforge import minilm, model_cache, static_embed
from taxoforge.minilm import OnnxMiniLM
from taxoforge.model_cache import content_hash, locate, write_atomically
from taxoforge.static_embed import StaticMiniLM
from taxoforge_cli.main import main as cli_main


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


def test_a_file_is_read_from_the_cache_then_from_the_install_else_made_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed, cache = tmp_path / "installed", tmp_path / "cache"
    monkeypatch.setattr(model_cache, "installed_dir", lambda: installed)
    assert locate("graph.onnx", cache) == cache / "graph.onnx"  # neither: made in the cache
    installed.mkdir()
    (installed / "graph.onnx").write_bytes(b"made at install")
    assert locate("graph.onnx", cache) == installed / "graph.onnx"
    assert write_atomically(cache / "graph.onnx", lambda fh: fh.write(b"made here"))
    assert locate("graph.onnx", cache) == cache / "graph.onnx"
    assert (cache / "graph.onnx").stat().st_mode & 0o777 == 0o644  # a runtime user reads it


def test_the_install_dir_is_inside_the_python_environment() -> None:
    assert model_cache.installed_dir() == Path(sys.prefix) / "share" / "taxoforge" / "models"


def test_taxoforge_models_makes_the_configured_encoders_files_where_jobs_find_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`taxoforge models` (run by `make install` and the image's build) makes each configured
    local encoder's files once, in the install dir, and a process with an empty cache of its
    own then loads them instead of making them."""
    installed, cache = tmp_path / "installed", tmp_path / "empty-home-cache"
    monkeypatch.setattr(model_cache, "installed_dir", lambda: installed)
    monkeypatch.setenv("TAXOFORGE_EMBED_ENCODER", "onnx")  # clustering's
    monkeypatch.setenv("TAXOFORGE_EMBED_TAGS_ENCODER", "static")
    monkeypatch.setenv("TAXOFORGE_EMBED_STATIC_DIMS", "8")
    distills: list[int] = []

    def fake_distill(
        model_dir: Path, dims: int, sif: float, cache_dir: Path | None = None
    ) -> np.ndarray:  # a stand-in table: the real one runs the vocabulary through ONNX
        distills.append(dims)
        return np.random.default_rng(0).normal(size=(30522, dims)).astype(np.float32)

    monkeypatch.setattr(static_embed, "distill_table", fake_distill)
    cli_main(["models"])
    made = sorted(p.name for p in installed.iterdir())
    assert len(made) == 2 and distills == [8], made
    assert made[0].startswith("onnx-minilm-") and made[0].endswith("-fp32.onnx")
    assert made[1].startswith("static-minilm-") and "-8d-" in made[1]
    printed = capsys.readouterr()
    assert "2 model files ready" in printed.out + printed.err
    cli_main(["models"])  # already there: nothing made again
    assert distills == [8]

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file made at install is made again")

    monkeypatch.setattr(static_embed, "distill_table", no_build)
    monkeypatch.setattr(minilm, "_onnx_graph", no_build)
    monkeypatch.setattr(minilm, "_build_in_child", no_build)
    static = StaticMiniLM(dims=8, cache_dir=cache)
    onnx = OnnxMiniLM(int8=False, cache_dir=cache)
    assert static.path.parent == installed and onnx.path.parent == installed
    assert onnx.encode(["hello"]).shape == (1, 384)
    assert not cache.exists()


def test_a_damaged_installed_file_is_made_again_in_the_cache_not_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed, cache = tmp_path / "installed", tmp_path / "cache"
    monkeypatch.setattr(model_cache, "installed_dir", lambda: installed)
    monkeypatch.setattr(
        static_embed,
        "distill_table",
        lambda *a, **k: np.ones((30522, 4), dtype=np.float32),
    )
    name = StaticMiniLM(dims=4, cache_dir=installed).path.name
    (installed / name).write_bytes(b"torn")
    again = StaticMiniLM(dims=4, cache_dir=cache)
    assert again.path == cache / name and again.table.shape == (30522, 4)
    assert (installed / name).read_bytes() == b"torn"


def test_taxoforge_models_without_the_model_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> Path:
        raise minilm.MiniLMNotInstalled("the local embedding model is not installed: pip ...")

    monkeypatch.setattr(minilm, "installed_model_dir", missing)
    with pytest.raises(SystemExit) as exited:
        cli_main(["models"])
    assert exited.value.code == 1
    printed = capsys.readouterr()
    assert "the local embedding model is not installed" in printed.out + printed.err
    assert "Traceback" not in printed.out + printed.err
