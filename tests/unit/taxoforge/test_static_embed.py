"""The static encoder distilled from MiniLM: its token table kept on disk by content hash and
written atomically, and a text's vector as the normalized sum of its tokens' rows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from taxoforge import static_embed
from taxoforge.embeddings import EmbedSettings, LocalMiniLM, make_encoder
from taxoforge.minilm import installed_model_dir
from taxoforge.static_embed import StaticMiniLM

# Each test makes its files in its own cache directory, none installed.
pytestmark = pytest.mark.usefixtures("no_installed_model_files")


def _fake_table(calls: list[tuple[int, float]]):  # type: ignore[no-untyped-def]
    def distill(
        model_dir: Path, dims: int, sif: float, cache_dir: Path | None = None
    ) -> NDArray[np.float32]:
        calls.append((dims, sif))
        rng = np.random.default_rng(dims)
        return rng.normal(size=(30522, dims or 384)).astype(np.float32)

    return distill


def test_the_table_is_made_once_and_then_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, float]] = []
    monkeypatch.setattr(static_embed, "distill_table", _fake_table(calls))
    first = StaticMiniLM(dims=16, cache_dir=tmp_path)
    second = StaticMiniLM(dims=16, cache_dir=tmp_path)
    assert calls == [(16, 1e-4)]
    np.testing.assert_array_equal(first.table, second.table)
    # Named by the model files' hash and the parameters; no temporary file left behind.
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]
    assert "16d" in first.path.name
    StaticMiniLM(dims=8, cache_dir=tmp_path)  # other parameters: another table
    assert calls == [(16, 1e-4), (8, 1e-4)]
    assert len(list(tmp_path.iterdir())) == 2


def test_a_torn_cache_file_is_made_again_and_replaced_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, float]] = []
    monkeypatch.setattr(static_embed, "distill_table", _fake_table(calls))
    path = StaticMiniLM(dims=4, cache_dir=tmp_path).path
    path.write_bytes(path.read_bytes()[:100])  # as a crashed writer without the rename would
    again = StaticMiniLM(dims=4, cache_dir=tmp_path)
    assert len(calls) == 2 and again.table.shape == (30522, 4)
    assert np.load(path).shape == (30522, 4)


def test_an_unwritable_cache_costs_time_not_the_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, float]] = []
    monkeypatch.setattr(static_embed, "distill_table", _fake_table(calls))
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    model = StaticMiniLM(dims=4, cache_dir=blocked / "sub")
    assert model.encode(["hello"]).shape == (1, 4)


def test_a_vector_is_the_normalized_sum_of_its_token_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(static_embed, "distill_table", _fake_table([]))
    model = StaticMiniLM(dims=8, cache_dir=tmp_path)
    texts = ["python decorators", "", "cooking pasta at home tonight", "python decorators"]
    got = model.encode(texts)
    ids = model.tokenizer.encode(texts[2], add_special_tokens=False).ids
    expected = model.table[ids].sum(axis=0)
    np.testing.assert_allclose(got[2], expected / np.linalg.norm(expected), rtol=1e-5)
    np.testing.assert_array_equal(got[1], np.zeros(8, dtype=np.float32))  # no tokens
    np.testing.assert_allclose(np.linalg.norm(got[[0, 2, 3]], axis=1), 1.0, rtol=1e-5)
    # A text's vector does not depend on the texts encoded with it.
    np.testing.assert_allclose(got[0], model.encode(texts[:1])[0], rtol=1e-6)
    # max_tokens: only the first tokens count.
    first2 = model.table[ids[:2]].sum(axis=0)
    np.testing.assert_allclose(
        model.encode(texts[2:3], max_tokens=2)[0], first2 / np.linalg.norm(first2), rtol=1e-5
    )


@pytest.fixture(scope="module")
def distilled(
    tmp_path_factory: pytest.TempPathFactory, no_installed_model_files: None
) -> StaticMiniLM:
    """The real table, made from the installed model (~20 s) into a private cache."""
    return StaticMiniLM(cache_dir=tmp_path_factory.mktemp("static-cache"))


def test_the_distilled_encoder_keeps_meaning(distilled: StaticMiniLM) -> None:
    car, automobile, banana, cars = distilled.encode(["car", "automobile", "banana", "Cars"])
    assert distilled.dim == 256
    assert float(car @ automobile) > float(car @ banana)
    assert float(car @ cars) > 0.8
    # The SIF prior: a frequent piece ("the") weighs less than a rare one.
    assert distilled.table[distilled.tokenizer.token_to_id("the")].std() < (
        distilled.table[distilled.tokenizer.token_to_id("automobile")].std()
    )


async def test_static_is_an_encoder_setting(
    distilled: StaticMiniLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXOFORGE_EMBED_CACHE_DIR", str(distilled.path.parent))
    monkeypatch.setenv("TAXOFORGE_EMBED_ENCODER", "static")
    assert EmbedSettings().encoder == "static"
    model = make_encoder("static")
    assert isinstance(model, StaticMiniLM) and model.path == distilled.path
    embedder = LocalMiniLM()
    assert embedder.encoder == "static"
    assert (await embedder.embed([])).shape == (0, 256)
    vectors = await embedder.embed(["car", "automobile"])
    np.testing.assert_allclose(vectors, distilled.encode(["car", "automobile"]), rtol=1e-6)
    monkeypatch.setenv("TAXOFORGE_EMBED_STATIC_DIMS", "0")  # the model's full width
    assert LocalMiniLM("static").dim == 384


def test_the_cache_dir_defaults_under_the_users_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert static_embed.default_cache_dir() == Path("/somewhere/taxoforge")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert static_embed.default_cache_dir() == Path(os.path.expanduser("~/.cache/taxoforge"))
    assert installed_model_dir().is_dir()
