"""Offline embedding throughput, peak memory and agreement, every local encoder in one run.

Makes a corpus shaped like instruction data (words drawn, Zipf-weighted, from the model's own
vocabulary): open tags of 1-4 words with the variants an LLM writes (plurals, case, hyphens,
qualifiers), instructions of 10-60 words, and samples (an instruction, a newline, an answer of
50-400 words). ``--corpus realistic`` takes them from ``realistic_corpus.py`` instead (what
``select_bench.py --corpus realistic`` uploads: its distinct raw tags, with typos, word order
and near-synonyms, and its instructions and answers). Each encoder of ``--encoders`` runs in a
child process of its own, so its peak RSS is its own, and embeds every kind in batches of
``--batch`` texts (the selector's ``embed_all`` sends 256 per call). It prints texts/s per
kind, the model's load time, tags/s again when all are cached (``cached/s``: what a later step
pays), tags/s when all are in the machine's disk store (``stored/s``: what a later job pays),
the child's peak RSS (VmHWM), its RSS after the runs and after ``release_local_models``, then
how each encoder agrees with the reference (``--reference``, onnx: the model's own vectors):
the Spearman correlation of pairwise cosines over a sample of each kind (the only comparison
that holds across vector spaces), the tags' greedy merge at each ``--threshold`` (share of tags
given the same representative, and the merge counts), the instructions' 10 nearest neighbours
(overlap) and DEITA's walk over the instructions at ``--diversity`` (share of the chosen that
both choose). Cosine per text is printed only where the two encoders share a vector space
(numpy, onnx, onnx-int8).

The ONNX encoders' load time is a cached graph's once this machine built it (the first run
builds and caches it; ``TAXOFORGE_EMBED_CACHE_DIR`` points elsewhere to see a fresh machine).

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

ENCODERS = ("onnx", "onnx-int8", "static")
SAME_SPACE = {"numpy", "onnx", "onnx-int8"}
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


def realistic(tags: int, instructions: int, samples: int, seed: int) -> dict[str, list[str]]:
    """The three kinds of text from ``realistic_corpus.generate`` (tags: its distinct raw tags
    in order of first use)."""
    import re

    import realistic_corpus
    from tokenizers import Tokenizer

    from taxoforge.minilm import installed_model_dir

    vocab = Tokenizer.from_file(str(installed_model_dir() / "tokenizer.json")).get_vocab()
    words = sorted(
        (w for w in vocab if w.isascii() and w.isalpha() and len(w) >= 3), key=lambda w: vocab[w]
    )
    marker = re.compile(r"\s*\[tags: (.*)\]\s*$")
    tag_list: dict[str, None] = {}
    queries: list[str] = []
    answers: list[str] = []
    rows = max(instructions, samples, tags // 2, 100)
    for row in realistic_corpus.generated_rows(
        rows, seed, words, lambda q, a, s: {"query": q, "answer": a}
    ):
        found = marker.search(row["query"])
        if found:
            tag_list.update(dict.fromkeys(found.group(1).split(", ")))
        queries.append(marker.sub("", row["query"]))
        answers.append(row["answer"])
    return {
        "tags": list(tag_list)[:tags],
        "instructions": queries[:instructions],
        "samples": [f"{q}\n{a}" for q, a in zip(queries[:samples], answers, strict=False)],
    }


def spearman_of_cosines(a: NDArray[np.float32], b: NDArray[np.float32], n: int = 400) -> float:
    """Spearman correlation of the pairwise cosines of the first ``n`` rows, a's vs b's."""
    from scipy.stats import spearmanr

    a, b = a[:n], b[:n]
    upper = np.triu_indices(len(a), k=1)
    if len(upper[0]) < 2:
        return float("nan")
    return float(spearmanr((a @ a.T)[upper], (b @ b.T)[upper]).statistic)


def deita_overlap(
    a: NDArray[np.float32], b: NDArray[np.float32], threshold: float, budget: int
) -> tuple[float, int, int]:
    """DEITA's walk over the rows in order (a fixed quality order) for ``budget`` picks with
    each encoder: the share of the chosen both choose, and how many each skipped."""
    from services.selector.examples import Candidate
    from services.selector.methods.deita import deita
    from services.selector.methods.ranking import Budget

    cands = [
        Candidate(item_id=f"i{i:07d}", query="", response_chars=0, tokens=1) for i in range(len(a))
    ]
    order = list(range(len(a)))
    ca = deita(order, cands, Budget(budget), a, threshold)
    cb = deita(order, cands, Budget(budget), b, threshold)
    skipped_a = (max(ca) + 1 - len(ca)) if ca else 0
    skipped_b = (max(cb) + 1 - len(cb)) if cb else 0
    return len(set(ca) & set(cb)) / max(1, len(ca)), skipped_a, skipped_b


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
    result["rate"]["stored"] = stored_rate(model, texts["tags"], encoder)
    result["rss_mib"] = peak_rss_mib()
    result["rss_imports_mib"] = rss_before
    result["rss_used_mib"] = rss_mib()
    del model, parts
    from taxoforge.embeddings import release_local_models

    release_local_models()
    result["rss_released_mib"] = rss_mib()
    out.put(result)


def rss_mib() -> float:
    """This process's resident memory now (VmRSS), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stored_rate(model: Any, tags: list[str], encoder: str) -> float:
    """Tags/s for a later job whose tags are all in the machine's disk store already (a new
    process: nothing in memory), the store being a fresh file in a temporary directory."""
    import asyncio
    import tempfile
    from pathlib import Path

    from taxoforge.embeddings import CachedEmbedder, DiskVectorStore, VectorCache

    class Direct:
        async def embed(self, texts: Any) -> Any:
            return model.encode(list(texts))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{encoder}.sqlite"
        store = DiskVectorStore(path, model.dim, len(tags))
        asyncio.run(CachedEmbedder(Direct(), "bench", store, VectorCache(len(tags))).embed(tags))
        store.close()
        later = CachedEmbedder(
            Direct(), "bench", DiskVectorStore(path, model.dim, len(tags)), VectorCache(0)
        )
        start = time.perf_counter()
        asyncio.run(later.embed(tags))
        elapsed = time.perf_counter() - start
    return len(tags) / elapsed if elapsed > 0 else float("inf")


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
    parser.add_argument(
        "--threshold", default="0.85", help="the tag merge's cosines, comma-separated"
    )
    parser.add_argument("--diversity", type=float, default=0.9, help="DEITA's cosine")
    parser.add_argument("--reference", default="onnx", help="the encoder others are held to")
    parser.add_argument("--corpus", choices=("words", "realistic"), default="words")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    make = realistic if args.corpus == "realistic" else corpus
    texts = make(args.tags, args.instructions, args.samples, args.seed)
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
        + " ".join(f"{k + '/s':>15}" for k in (*KINDS, "cached", "stored"))
        + f" {'peak RSS MiB':>13} {'(imports)':>10} {'RSS used':>9} {'released':>9}"
    )
    for encoder, r in results.items():
        print(
            f"{encoder:<10} {r['load_s']:>7.2f} "
            + " ".join(f"{r['rate'][k]:>15,.0f}" for k in (*KINDS, "cached", "stored"))
            + f" {r['rss_mib']:>13.0f} {r['rss_imports_mib']:>10.0f}"
            + f" {r['rss_used_mib']:>9.0f} {r['rss_released_mib']:>9.0f}"
        )
    reference = results.get(args.reference)
    if reference is None or len(results) < 2:
        return
    from taxoforge.labels import greedy_merge

    thresholds = [float(t) for t in args.threshold.split(",") if t.strip()]
    ref_merges = {t: greedy_merge(reference["vectors"]["tags"], t) for t in thresholds}
    budget = max(1, len(texts["instructions"]) // 2)
    print(
        f"\nagreement with {args.reference}: Spearman of pairwise cosines (400 texts a kind);"
        f" tag merge (same representative; merges there / here); instruction 10-NN overlap;"
        f" DEITA at {args.diversity} over the instructions for {budget} (same chosen; skipped"
        f" there / here)"
    )
    for encoder, r in results.items():
        if encoder == args.reference:
            continue
        parts = [
            f"{k} rho {spearman_of_cosines(r['vectors'][k], reference['vectors'][k]):.3f}"
            for k in KINDS
            if len(texts[k]) > 2
        ]
        if encoder in SAME_SPACE and args.reference in SAME_SPACE:
            cos = (r["vectors"]["instructions"] * reference["vectors"]["instructions"]).sum(1)
            parts.append(f"instruction cosine mean {cos.mean():.4f} min {cos.min():.4f}")
        for t in thresholds:
            merge = greedy_merge(r["vectors"]["tags"], t)
            same = float(np.mean(merge == ref_merges[t])) if len(merge) else 1.0
            parts.append(f"tags@{t} alike {same:.2%} ({merges(ref_merges[t])}/{merges(merge)})")
        knn = knn_overlap(r["vectors"]["instructions"], reference["vectors"]["instructions"])
        parts.append(f"10-NN {knn:.2%}")
        both, skip_ref, skip_here = deita_overlap(
            reference["vectors"]["instructions"],
            r["vectors"]["instructions"],
            args.diversity,
            budget,
        )
        parts.append(f"DEITA alike {both:.2%} ({skip_ref}/{skip_here})")
        print(f"{encoder:<10} " + "; ".join(parts))


if __name__ == "__main__":
    main()
