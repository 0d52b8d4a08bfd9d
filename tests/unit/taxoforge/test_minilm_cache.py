"""The ONNX encoder's graph built once per machine: serialized under the cache directory by
the weights' content hash and the builder's version, loaded from there afterwards (no weights
in numpy, no graph built or checked), with the same vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from taxoforge import minilm
from taxoforge.minilm import OnnxMiniLM

# Each test makes its files in its own cache directory, none installed.
pytestmark = pytest.mark.usefixtures("no_installed_model_files")

TEXTS = ["python decorators", "cooking pasta al dente", "a b", "machine learning basics"]


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    builds: list[bool] = []
    real = minilm._onnx_graph

    def spy(m: minilm.MiniLM, *, int8: bool) -> Any:
        builds.append(int8)
        return real(m, int8=int8)

    monkeypatch.setattr(minilm, "_onnx_graph", spy)
    return builds


@pytest.mark.parametrize("int8", [False, True])
def test_the_graph_is_built_once_then_loaded_with_the_same_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, int8: bool
) -> None:
    builds = _count_builds(monkeypatch)
    first = OnnxMiniLM(int8=int8, cache_dir=tmp_path, build_in_child=False)
    assert builds == [int8]
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temporary left
    assert first.path.name.startswith(f"onnx-minilm-g{minilm.GRAPH_VERSION}-")
    assert first.path.name.endswith("-int8.onnx" if int8 else "-fp32.onnx")

    import onnx.checker

    def no_check(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached graph is checked again")

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached graph loads the weights again")

    monkeypatch.setattr(onnx.checker, "check_model", no_check)
    monkeypatch.setattr(minilm.MiniLM, "_load_weights", no_weights)
    again = OnnxMiniLM(int8=int8, cache_dir=tmp_path)
    assert builds == [int8] and again.path == first.path
    np.testing.assert_array_equal(again.encode(TEXTS), first.encode(TEXTS))


def test_fp32_and_int8_and_a_new_builder_get_their_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = _count_builds(monkeypatch)
    fp32 = OnnxMiniLM(int8=False, cache_dir=tmp_path, build_in_child=False).path
    int8 = OnnxMiniLM(int8=True, cache_dir=tmp_path, build_in_child=False).path
    monkeypatch.setattr(minilm, "GRAPH_VERSION", minilm.GRAPH_VERSION + 1)
    newer = OnnxMiniLM(int8=False, cache_dir=tmp_path, build_in_child=False).path
    assert builds == [False, True, False]
    assert len({fp32, int8, newer}) == 3


def test_an_unreadable_graph_file_is_built_again_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = _count_builds(monkeypatch)
    good = OnnxMiniLM(int8=False, cache_dir=tmp_path, build_in_child=False)
    expected = good.encode(TEXTS)
    size = good.path.stat().st_size
    good.path.write_bytes(good.path.read_bytes()[:1000])  # as a damaged disk would leave it
    again = OnnxMiniLM(int8=False, cache_dir=tmp_path, build_in_child=False)
    assert len(builds) == 2 and again.path.stat().st_size == size
    np.testing.assert_array_equal(again.encode(TEXTS), expected)


def test_an_unwritable_cache_costs_time_not_the_encoder(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    model = OnnxMiniLM(int8=False, cache_dir=blocked / "sub")
    reference = OnnxMiniLM(int8=False, cache_dir=tmp_path / "ok")
    np.testing.assert_array_equal(model.encode(TEXTS), reference.encode(TEXTS))


def test_the_session_keeps_no_memory_arena(tmp_path: Path) -> None:
    # The arena held the largest batch's buffers for the process's life (~100 MiB measured).
    model = OnnxMiniLM(int8=False, cache_dir=tmp_path)
    assert model._session.get_session_options().enable_cpu_mem_arena is False
    assert model._layers == [] and model._word.size == 0  # no numpy weights kept


def test_a_child_process_builds_a_missing_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building holds weights, graph and bytes at once: that peak is the child's, not ours.
    reference = OnnxMiniLM(int8=False, cache_dir=tmp_path / "here", build_in_child=False)

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("built in this process")

    monkeypatch.setattr(minilm, "_onnx_graph", not_here)
    monkeypatch.setattr(minilm.MiniLM, "_load_weights", not_here)
    model = OnnxMiniLM(int8=False, cache_dir=tmp_path / "child")
    assert model.path.is_file() and model.path.name == reference.path.name
    np.testing.assert_array_equal(model.encode(TEXTS), reference.encode(TEXTS))


def test_a_failed_child_falls_back_to_building_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = _count_builds(monkeypatch)
    monkeypatch.setattr(minilm.sys, "executable", str(tmp_path / "no-python"))
    model = OnnxMiniLM(int8=True, cache_dir=tmp_path)
    assert builds == [True] and model.path.is_file()
