"""Offline embedding throughput, peak memory and agreement, every local encoder in one run.

Makes a corpus shaped like instruction data (words drawn, Zipf-weighted, from the model's own
vocabulary): open tags of 1-4 words with the variants an LLM writes (plurals, case, hyphens,
qualifiers), instructions of 10-60 words, and samples (an instruction, a newline, an answer of
50-400 words: what DEITA embeds). Each encoder of ``--encoders`` runs in a child process of
its own, so its peak RSS is its own, and embeds every kind in batches of ``--batch`` texts
(the selector's ``embed_all`` sends 256 per call). It prints texts/s per kind, the model's
load time, tags/s again when all are cached (``cached/s``: what a later step pays) and the
child's peak RSS (VmHWM), then how each encoder agrees with the numpy
reference: cosine per text (mean, min), the tags' greedy merge at ``--threshold`` (share of
tags given the same representative) and the instructions' 10 nearest neighbours (overlap).

Run: ``.venv/bin/python benchmarks/embed_bench.py`` (``--help`` for the options); a smoke
run: ``--tags 500 --instructions 200 --samples 50``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

ENCODERS = ("numpy", "onnx", "onnx-int8")
KINDS = ("tags", "instructions", "samples")
QUALIFIERS = ("basics", "advanced", "for beginners", "tips", "overview", "in practice")


def vocabulary() -> list[str]:
    """Whole words of the model's WordPiece vocabulary, in a fixed order."""
    from taxoforge.minilm import installed_model_dir

    vocab = json.loads((installed_model_dir() / "tokenizer.json").read_text())["model"]["vocab"]
    return sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) > 1)


def corpus(tags: int, instructions: int, samples: int, seed: int) -> dict[str, list[str]]:
    """The three kinds of text, fixed by ``seed``."""
    rng = random.Random(seed)
    words = vocabulary()
    rng.shuffle(words)
    weights = [1 / (rank + 10) for rank in range(len(words))]  # Zipf-like: a few words common

    def phrase(n: int, punctuate: bool = False) -> str:
        out = rng.choices(words, weights, k=n)
        if punctuate:  # a sentence every ~12 words, as prose has
            for i in range(11, n, 12):
                out[i] += "."
            out[0] = out[0].capitalize()
        return " ".join(out)

    tag_list: list[str] = []
    while len(tag_list) < tags:
        base = phrase(rng.randint(1, 4))
        tag_list.append(base)
        for _ in range(rng.choice((0, 0, 1, 2, 3))):  # long tail: most tags have no variant
            variant = rng.choice(
                (
                    base + "s",
                    base.title(),
                    base.replace(" ", "-"),
                    f"{base} {rng.choice(QUALIFIERS)}",
                    " ".join(reversed(base.split())),
                )
            )
            tag_list.append(variant)
    queries = [phrase(rng.randint(10, 60), True) + "?" for _ in range(instructions)]
    answers = [phrase(rng.randint(50, 400), True) for _ in range(samples)]
    return {
        "tags": tag_list[:tags],
        "instructions": queries,
        "samples": [f"{q}\n{a}" for q, a in zip(queries, answers, strict=False)],
    }


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_encoder(encoder: str, texts: dict[str, list[str]], batch: int, out: Any) -> None:
    """Child process: load ``encoder``, embed each kind batch by batch, send back the figures
    and the vectors."""
    from taxoforge.embeddings import make_encoder

    rss_before = peak_rss_mib()
    start = time.perf_counter()
    model = make_encoder(encoder)
    result: dict[str, Any] = {"load_s": time.perf_counter() - start, "rate": {}, "vectors": {}}
    for kind in KINDS:
        items = texts[kind]
        start = time.perf_counter()
        parts = [model.encode(items[i : i + batch]) for i in range(0, len(items), batch)]
        elapsed = time.perf_counter() - start
        result["rate"][kind] = len(items) / elapsed if elapsed > 0 else float("inf")
        result["vectors"][kind] = np.concatenate(parts) if parts else np.zeros((0, model.dim))
    result["rate"]["cached"] = cached_rate(model, texts["tags"])
    result["rss_mib"] = peak_rss_mib()
    result["rss_imports_mib"] = rss_before
    out.put(result)


def cached_rate(model: Any, tags: list[str]) -> float:
    """Tags/s when every tag is in the process cache already (a second step's look-ups)."""
    import asyncio

    from taxoforge.embeddings import CachedEmbedder, VectorCache

    class Direct:
        async def embed(self, texts: Any) -> Any:
            return model.encode(list(texts))

    cached = CachedEmbedder(Direct(), "bench", cache=VectorCache(len(tags)))
    asyncio.run(cached.embed(tags))
    start = time.perf_counter()
    asyncio.run(cached.embed(tags))
    elapsed = time.perf_counter() - start
    return len(tags) / elapsed if elapsed > 0 else float("inf")


def knn_overlap(a: NDArray[np.float32], b: NDArray[np.float32], k: int = 10) -> float:
    """Mean share of each row's ``k`` nearest rows (by cosine) that both encoders agree on."""

    def nearest(x: NDArray[np.float32]) -> NDArray[np.int64]:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :k]

    na, nb = nearest(a), nearest(b)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(na, nb, strict=True)]))


def merges(rep_of: NDArray[np.int64]) -> int:
    """How many rows a greedy merge folded into another."""
    return int((rep_of != np.arange(len(rep_of))).sum())


def main() -> None:
    """Parse the options, run each encoder in its own process, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated")
    parser.add_argument("--tags", type=int, default=4000)
    parser.add_argument("--instructions", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256, help="texts per encode call")
    parser.add_argument("--threshold", type=float, default=0.85, help="the tag merge's cosine")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    texts = corpus(args.tags, args.instructions, args.samples, args.seed)
    words = {k: np.mean([len(t.split()) for t in v]) if v else 0 for k, v in texts.items()}
    print(
        f"embed_bench: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        + ", ".join(f"{len(texts[k])} {k} (~{words[k]:.0f} words)" for k in KINDS)
        + f"; {args.batch} texts per call"
    )
    ctx = mp.get_context("spawn")  # a fresh interpreter each: its own peak RSS
    results: dict[str, dict[str, Any]] = {}
    for encoder in encoders:
        queue = ctx.Queue()
        child = ctx.Process(target=run_encoder, args=(encoder, texts, args.batch, queue))
        child.start()
        results[encoder] = queue.get()
        child.join()
    print(
        f"\n{'encoder':<10} {'load s':>7} "
        + " ".join(f"{k + '/s':>15}" for k in (*KINDS, "cached"))
        + f" {'peak RSS MiB':>13} {'(imports)':>10}"
    )
    for encoder, r in results.items():
        print(
            f"{encoder:<10} {r['load_s']:>7.2f} "
            + " ".join(f"{r['rate'][k]:>15,.0f}" for k in (*KINDS, "cached"))
            + f" {r['rss_mib']:>13.0f} {r['rss_imports_mib']:>10.0f}"
        )
    reference = results.get("numpy")
    if reference is None or len(results) < 2:
        return
    from taxoforge.labels import greedy_merge

    ref_merge = greedy_merge(reference["vectors"]["tags"], args.threshold)
    print(f"\nagreement with numpy (cosine per text; tag merge at {args.threshold}; 10-NN)")
    for encoder, r in results.items():
        if encoder == "numpy":
            continue
        cos = {
            k: (r["vectors"][k] * reference["vectors"][k]).sum(axis=1) for k in KINDS if texts[k]
        }
        merge = greedy_merge(r["vectors"]["tags"], args.threshold)
        same = float(np.mean(merge == ref_merge)) if len(merge) else 1.0
        knn = knn_overlap(r["vectors"]["instructions"], reference["vectors"]["instructions"])
        print(
            f"{encoder:<10} "
            + " ".join(f"{k} mean {c.mean():.4f} min {c.min():.4f};" for k, c in cos.items())
            + f" tags merged alike {same:.2%} ({merges(ref_merge)} merges in numpy,"
            + f" {merges(merge)} here);"
            + f" instruction 10-NN overlap {knn:.2%}"
        )


if __name__ == "__main__":
    main()
