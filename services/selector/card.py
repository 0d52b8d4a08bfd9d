"""The dataset card: a ``README.md`` the Hugging Face Hub reads, plus score charts as PNG.

The YAML header carries the Hub's metadata (license, languages, size bucket, one config per
exported format pointing at its Parquet file); the body says what was selected, how to load it,
what it is made of, how good it is against every candidate, what deduplication and
decontamination removed, how the selection methods compared, and with which settings.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.selector.exports import WrittenFile
from taxoforge.selection import EXPORT_FORMATS, PREFERENCE_FORMATS, SFT_FORMATS

__all__ = [
    "BUCKETS",
    "CardInput",
    "histogram",
    "markdown_cell",
    "size_category",
    "write_card",
]

# Quality buckets on 1-100: (0, 10], (10, 20], ... (90, 100]; labels as the integer scores.
BUCKETS: tuple[str, ...] = tuple(f"{10 * i + 1}-{10 * (i + 1)}" for i in range(10))
# Rows a composition table shows before summing up the rest.
MAX_TABLE_ROWS = 50
# Clusters a chart labels one by one; beyond, the axis shows ranks only.
MAX_CLUSTER_LABELS = 40
_SIZES: tuple[tuple[int, str], ...] = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)


@dataclass
class CardInput:
    """Everything the card shows; collected by the selector once the export is written."""

    job_id: str
    name: str
    license: str = "other"
    # ISO codes of the selected records.
    languages: list[str] = field(default_factory=list)
    # The selection method that chose the records.
    method: str = ""
    # What ExportWriter wrote (paths under the card's out_dir).
    files: list[WrittenFile] = field(default_factory=list)
    # Dimension ("taxonomy node", "language", "difficulty", "cluster", ...) -> value -> selected.
    composition: dict[str, Counter[str]] = field(default_factory=dict)
    # 1-100 quality of the selected records and of every candidate.
    selected_quality: list[float] = field(default_factory=list)
    candidate_quality: list[float] = field(default_factory=list)
    # Generation / judging / selection settings (nested, JSON-like), shown as YAML blocks.
    settings: dict[str, Any] = field(default_factory=dict)
    # The selection report: candidates, selected, duplicates, near_duplicates,
    # contaminated {bench: n}, methods [{method, records, tokens, mean_quality, ...}].
    report: dict[str, Any] = field(default_factory=dict)
    # Candidates per cluster (cluster -> size), for the cluster chart; the selected count per
    # cluster comes from ``composition["cluster"]``.
    cluster_sizes: Counter[str] = field(default_factory=Counter)
    # The Hub repository ("owner/name") the card is uploaded to, for the load snippets.
    repo_id: str = ""


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket of ``n`` records."""
    for limit, name in _SIZES:
        if n < limit:
            return name
    return "n>1T"


def histogram(scores: Iterable[float]) -> list[int]:
    """Counts of ``scores`` in the ten ``BUCKETS`` (out-of-range scores join the end buckets;
    NaN and infinities are left out)."""
    counts = [0] * len(BUCKETS)
    for score in scores:
        if math.isfinite(score):
            counts[min(max(math.ceil(score / 10) - 1, 0), len(BUCKETS) - 1)] += 1
    return counts


def markdown_cell(value: object) -> str:
    """``value`` as one markdown table cell: pipes and backslashes escaped, line breaks as
    ``<br>``, ``<`` as an entity (so text never opens an HTML tag)."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
    text = re.sub(r"\r\n|\r|\n", "<br>", text)
    return text if text.strip() else "(none)"


def _value(value: object) -> str:
    """A report value as table text."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], right: int = 0) -> list[str]:
    """A markdown table; the last ``right`` columns are right-aligned (numbers)."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    lines = [
        "| " + " | ".join(markdown_cell(h) for h in header) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines.extend("| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows)
    return lines


def _jsonable(value: Any) -> Any:
    """Plain dicts, lists and scalars, so ``yaml.safe_dump`` can write any settings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _fenced(text: str, lang: str) -> list[str]:
    """A code block whose fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", text.rstrip("\n"), fence]


def _relative(out_dir: Path, path: Path) -> str:
    """``path`` relative to ``out_dir``, as the card links it."""
    for base, target in ((out_dir, path), (out_dir.resolve(), path.resolve())):
        try:
            return target.relative_to(base).as_posix()
        except ValueError:
            continue
    if not path.is_absolute():
        return path.as_posix()
    raise ValueError(f"{path} is not inside {out_dir}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _records(n: int) -> str:
    return f"{n:,} record" + ("" if n == 1 else "s")


@dataclass
class _Formats:
    """Per export format: its records and its files' relative paths."""

    records: dict[str, int] = field(default_factory=dict)
    paths: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, out_dir: Path, files: Iterable[WrittenFile]) -> _Formats:
        result = cls()
        for file in files:
            if file.kind not in EXPORT_FORMATS:
                continue  # a meta/ side file
            result.records[file.kind] = max(result.records.get(file.kind, 0), file.records)
            result.paths.setdefault(file.kind, {})[file.format] = _relative(out_dir, file.path)
        return result

    def configs(self) -> list[str]:
        """Formats with a Parquet file and records, sft first; every Parquet format when none
        has records (so the Hub never guesses a config across formats of different shapes)."""
        order = sorted(self.paths, key=lambda f: (f != "sft", EXPORT_FORMATS.index(f)))
        with_parquet = [f for f in order if "parquet" in self.paths[f]]
        return [f for f in with_parquet if self.records[f]] or with_parquet

    def size(self) -> int:
        return max(self.records.values(), default=0)


def _header(card: CardInput, formats: _Formats, n: int) -> dict[str, Any]:
    """The YAML metadata the Hub reads."""
    tags = ["synthetic", "taxoforge"]
    if any(formats.records.get(f) for f in SFT_FORMATS):
        tags.append("sft")
    if any(formats.records.get(f) for f in PREFERENCE_FORMATS):
        tags.append("dpo")
    header: dict[str, Any] = {"license": card.license or "other"}
    languages = list(dict.fromkeys(lang.strip() for lang in card.languages if lang.strip()))
    if languages:
        header["language"] = languages
    header |= {
        "task_categories": ["text-generation"],
        "tags": tags,
        "size_categories": [size_category(n)],
        "pretty_name": _one_line(card.name) or card.job_id,
    }
    configs: list[dict[str, Any]] = []
    for fmt in formats.configs():
        config: dict[str, Any] = {"config_name": fmt}
        if fmt == "sft":
            config["default"] = True
        config["data_files"] = [{"split": "train", "path": formats.paths[fmt]["parquet"]}]
        configs.append(config)
    if configs:
        header["configs"] = configs
    return header


def _summary(card: CardInput, formats: _Formats, n: int) -> list[str]:
    candidates = card.report.get("candidates")
    of = f" out of {candidates:,} candidates" if isinstance(candidates, int) else ""
    method = f" by the `{card.method}` selection method" if card.method else ""
    lines = [
        f"# {_one_line(card.name) or card.job_id}",
        "",
        "Synthetic fine-tuning data generated and selected with taxoforge"
        f" (job `{card.job_id}`): {_records(n)} chosen{method}{of}.",
    ]
    if card.languages:
        lines += ["", "Languages: " + ", ".join(f"`{lang}`" for lang in card.languages) + "."]
    if formats.paths:
        rows = []
        for fmt in sorted(formats.paths, key=EXPORT_FORMATS.index):
            links = [
                f"[{label}]({formats.paths[fmt][kind]})"
                for kind, label in (("jsonl", "JSON Lines"), ("parquet", "Parquet"))
                if kind in formats.paths[fmt]
            ]
            rows.append([fmt, formats.records[fmt], ", ".join(links)])
        lines += ["", "## Files", "", *_table(["Format", "Records", "Files"], rows)]
        lines += [
            "",
            "`sft` and `preference` follow TRL's conversational formats (explicit prompt);"
            " `openai-sft` and `openai-dpo` follow OpenAI's fine-tuning formats and carry no id:"
            " every format keeps the same order, so line *i* of `openai-sft` is the *i*-th record"
            " of `sft` (and of `sharegpt`), and line *i* of `openai-dpo` is the *i*-th record of"
            " `preference`. `alpaca` holds the single-turn records only.",
        ]
    return lines


def _loading(card: CardInput, formats: _Formats) -> list[str]:
    configs = formats.configs()
    if not configs:
        return []
    lines = ["## How to load", ""]
    for fmt in configs:
        code = ["from datasets import load_dataset", ""]
        if card.repo_id:
            code += [f'ds = load_dataset("{card.repo_id}", "{fmt}", split="train")', ""]
            code += ["# or, from a local copy of this folder:"]
        path = formats.paths[fmt]["parquet"]
        code += [f'ds = load_dataset("parquet", data_files="{path}", split="train")']
        lines += [f"`{fmt}` ({_records(formats.records[fmt])}):", ""]
        lines += [*_fenced("\n".join(code), "python"), ""]
    return lines[:-1]


def _composition(card: CardInput) -> list[str]:
    dimensions = [(name, counts) for name, counts in card.composition.items() if counts]
    if not dimensions:
        return []
    lines = ["## Composition"]
    for name, counts in dimensions:
        total = sum(counts.values())
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        rows: list[list[object]] = [
            [value, count, f"{100 * count / total:.1f}%"]
            for value, count in ranked[:MAX_TABLE_ROWS]
        ]
        rest = ranked[MAX_TABLE_ROWS:]
        if rest:
            more = sum(count for _, count in rest)
            rows.append([f"({len(rest)} more)", more, f"{100 * more / total:.1f}%"])
        title = _one_line(name[:1].upper() + name[1:])
        lines += ["", f"### {title}", "", *_table([title, "Records", "Share"], rows, right=2)]
    return lines


def _quality(card: CardInput, images: Sequence[str]) -> list[str]:
    selected = [s for s in card.selected_quality if math.isfinite(s)]
    candidates = [s for s in card.candidate_quality if math.isfinite(s)]
    lines = ["## Quality", ""]
    if not selected and not candidates:
        return [*lines, "No quality scores were recorded."]
    lines.append(
        "Quality is the 1-100 score selection ranks by (the comparative score against the"
        " record's cluster when compared, else the judge's score)."
    )
    if "images/quality.png" in images:
        lines += ["", "![Quality: selected records against all candidates](images/quality.png)"]
    stats = []
    for label, scores in (("Selected", selected), ("All candidates", candidates)):
        if scores:
            mean, median = statistics.fmean(scores), statistics.median(scores)
            stats.append([label, len(scores), f"{mean:.1f}", f"{median:.1f}"])
        else:
            stats.append([label, 0, "-", "-"])
    lines += ["", *_table(["Records", "Scored", "Mean", "Median"], stats, right=3)]
    buckets = zip(BUCKETS, histogram(candidates), histogram(selected), strict=True)
    lines += ["", *_table(["Score", "Candidates", "Selected"], buckets, right=2)]
    return lines


def _clusters(images: Sequence[str]) -> list[str]:
    if "images/clusters.png" not in images:
        return []
    chart = "![Cluster sizes and selected records](images/clusters.png)"
    return ["## Clusters", "", "Candidates (size) and selected records per cluster.", "", chart]


def _dedup(report: Mapping[str, Any]) -> list[str]:
    rows: list[list[object]] = []
    for key, label in (
        ("candidates", "Candidates"),
        ("duplicates", "Exact duplicates removed"),
        ("near_duplicates", "Near duplicates removed"),
    ):
        if key in report:
            rows.append([label, _value(report[key])])
    contaminated = report.get("contaminated")
    if isinstance(contaminated, Mapping):
        rows.extend(
            [f"Contaminated ({bench}) removed", _value(n)] for bench, n in contaminated.items()
        )
    if "selected" in report:
        rows.append(["Selected", _value(report["selected"])])
    if not rows:
        return []
    return ["## Deduplication and decontamination", "", *_table(["Step", "Records"], rows, 1)]


def _methods(report: Mapping[str, Any], chosen: str) -> list[str]:
    methods = [m for m in report.get("methods") or [] if isinstance(m, Mapping)]
    if not methods:
        return []
    columns = list(dict.fromkeys(["method", *(key for m in methods for key in m)]))
    rows = []
    for method in methods:
        row = [_value(method.get(column)) for column in columns]
        if chosen and method.get("method") == chosen:
            row[0] += " (used)"
        rows.append(row)
    header = [c.replace("_", " ") for c in columns]
    return ["## Selection methods", "", *_table(header, rows, right=len(columns) - 1)]


def _settings(settings: Mapping[str, Any]) -> list[str]:
    if not settings:
        return []
    lines = ["## Settings"]
    for name, value in settings.items():
        text = yaml.safe_dump(
            _jsonable(value), sort_keys=False, allow_unicode=True, default_flow_style=False
        )
        lines += ["", f"### {_one_line(str(name))}", "", *_fenced(text, "yaml")]
    return lines


def _quality_chart(path: Path, selected: Sequence[float], candidates: Sequence[float]) -> None:
    """Selected and candidate histograms overlaid, each as the share of its own records (so a
    small selection and a large pool compare)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.add_subplot()
    positions = list(range(len(BUCKETS)))
    for scores, label, width, alpha in (
        (candidates, "All candidates", 0.8, 0.45),
        (selected, "Selected", 0.5, 0.85),
    ):
        counts = histogram(scores)
        total = sum(counts)
        shares = [100 * c / total if total else 0.0 for c in counts]
        axes.bar(positions, shares, width=width, alpha=alpha, label=f"{label} ({total:,})")
    axes.set_xticks(positions, BUCKETS)
    axes.set_xlabel("Quality (1-100)")
    axes.set_ylabel("Share of records (%)")
    axes.legend()
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})


def _cluster_chart(path: Path, sizes: Counter[str], selected: Counter[str]) -> None:
    """Candidates and selected records per cluster, largest cluster first."""
    from matplotlib.figure import Figure

    clusters = sorted(set(sizes) | set(selected), key=lambda c: (-sizes[c], -selected[c], c))
    figure = Figure(figsize=(max(6.0, min(0.3 * len(clusters), 20.0)), 4), layout="constrained")
    axes = figure.add_subplot()
    positions = list(range(len(clusters)))
    if sizes:
        axes.bar(positions, [sizes[c] for c in clusters], width=0.8, alpha=0.45, label="Size")
    axes.bar(positions, [selected[c] for c in clusters], width=0.5, alpha=0.85, label="Selected")
    if len(clusters) <= MAX_CLUSTER_LABELS:
        axes.set_xticks(positions, clusters)
        axes.set_xlabel("Cluster")
    else:
        axes.set_xlabel(f"Clusters ({len(clusters)}, largest first)")
    axes.set_ylabel("Records")
    axes.legend()
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})


def write_card(out_dir: Path, card: CardInput) -> list[Path]:
    """Write ``README.md`` and its ``images/*.png`` into ``out_dir``.

    Returns:
        The written files, relative to ``out_dir`` (README.md first).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    formats = _Formats.of(out_dir, card.files)
    n = formats.size() if formats.records else int(card.report.get("selected") or 0)
    written: list[Path] = []
    selected = [s for s in card.selected_quality if math.isfinite(s)]
    candidates = [s for s in card.candidate_quality if math.isfinite(s)]
    sizes = +card.cluster_sizes
    cluster_selected = +card.composition.get("cluster", Counter())
    if selected or candidates or sizes or cluster_selected:
        (out_dir / "images").mkdir(exist_ok=True)
    if selected or candidates:
        _quality_chart(out_dir / "images" / "quality.png", selected, candidates)
        written.append(Path("images/quality.png"))
    if sizes or cluster_selected:
        _cluster_chart(out_dir / "images" / "clusters.png", sizes, cluster_selected)
        written.append(Path("images/clusters.png"))
    images = [p.as_posix() for p in written]

    header = yaml.safe_dump(
        _header(card, formats, n), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    sections = [
        _summary(card, formats, n),
        _loading(card, formats),
        _composition(card),
        _quality(card, images),
        _clusters(images),
        _dedup(card.report),
        _methods(card.report, card.method),
        _settings(card.settings),
    ]
    body = "\n\n".join("\n".join(section) for section in sections if section)
    (out_dir / "README.md").write_text(f"---\n{header}---\n\n{body}\n", encoding="utf-8")
    return [Path("README.md"), *written]
