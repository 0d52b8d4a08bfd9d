"""The dataset card: a ``README.md`` the Hugging Face Hub reads, plus score charts as SVG.

The YAML header carries the Hub's metadata (license, languages, size bucket, one config per
exported format pointing at its Parquet file); the body says what was selected, how to load it,
what it is made of, how good it is against every candidate, how the candidates clustered (and
which went untagged, and why), what deduplication and decontamination removed, how the
selection methods compared, and with which settings.
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

from services.selector.charts import BLUE, ORANGE, horizontal_bars, paired_columns
from services.selector.exports import WrittenFile
from taxoforge.selection import EXPORT_FORMATS, PREFERENCE_FORMATS, SFT_FORMATS

__all__ = [
    "BUCKETS",
    "CardInput",
    "benchmark_name",
    "cluster_bars",
    "histogram",
    "markdown_cell",
    "size_category",
    "write_card",
]

# Quality buckets on 1-100: (0, 10], (10, 20], ... (90, 100]; labels as the integer scores.
BUCKETS: tuple[str, ...] = tuple(f"{10 * i + 1}-{10 * (i + 1)}" for i in range(10))
# Rows a composition table shows before summing up the rest.
MAX_TABLE_ROWS = 50
# Clusters the cluster chart shows one bar each (largest first); the rest share one "other" bar.
MAX_CLUSTER_BARS = 30
# Characters of a cluster label shown on the chart (the whole label is in the tables).
MAX_LABEL_CHARS = 40
# Short cells the plan-vs-delivered section lists one by one.
MAX_SHORT_CELLS = 100
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


def benchmark_name(name: str) -> str:
    """A benchmark as its tenant named it: registry names are "<tenant>~<name>", and "~" is in
    no name a tenant can give."""
    return name.rsplit("~", 1)[-1]


def _imported(card: CardInput) -> bool:
    """Whether the records were imported (a selection job) rather than generated."""
    return bool(card.report.get("imported"))


def _public_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as the tenant gave them: benchmark names without the registry's prefix."""
    shown = dict(settings)
    selection = shown.get("selection")
    if isinstance(selection, Mapping) and selection.get("decontaminate"):
        selection = dict(selection)
        selection["decontaminate"] = [benchmark_name(str(n)) for n in selection["decontaminate"]]
        shown["selection"] = selection
    return shown


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
    tags = ["taxoforge"] if _imported(card) else ["synthetic", "taxoforge"]
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
    if _imported(card):
        imported = card.report.get("imported")
        source = imported.get("name") if isinstance(imported, Mapping) else ""
        origin = f" from `{_one_line(str(source))}`" if source else ""
        what = f"Fine-tuning data imported{origin} and selected with taxoforge"
    else:
        what = "Synthetic fine-tuning data generated and selected with taxoforge"
    lines = [
        f"# {_one_line(card.name) or card.job_id}",
        "",
        f"{what} (job `{card.job_id}`): {_records(n)} chosen{method}{of}.",
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
        empty = [
            f for f in sorted(formats.paths, key=EXPORT_FORMATS.index) if not formats.records[f]
        ]
        if empty:
            lines += [
                "",
                "No record went to "
                + ", ".join(f"`{f}`" for f in empty)
                + ": "
                + ("its" if len(empty) == 1 else "their")
                + " files are kept, empty but loadable (the Parquet file holds the schema and"
                " no rows; the JSON Lines file no line).",
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


_CELL_DIMENSIONS = (
    ("node_id", "Taxonomy node"),
    ("language", "Language"),
    ("difficulty", "Difficulty"),
    ("task_type", "Task type"),
)


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _plan_vs_delivered(report: Mapping[str, Any]) -> list[str]:
    """The plan's cells against what the datasets hold (report.composition): totals per
    dimension, and each short cell with why. Nothing when there was no plan (selection)."""
    composition = report.get("composition")
    if not isinstance(composition, Mapping):
        return []
    cells = [c for c in composition.get("cells") or [] if isinstance(c, Mapping)]
    if not cells and not _count(composition.get("planned")):
        return []
    pref = bool(composition.get("preference_promised"))
    planned = _count(composition.get("planned")) or sum(_count(c.get("planned")) for c in cells)
    sft = _count(composition.get("sft")) or sum(_count(c.get("sft")) for c in cells)
    preference = _count(composition.get("preference")) or sum(
        _count(c.get("preference")) for c in cells
    )

    def short_by(cell: Mapping[str, Any]) -> int:
        want = _count(cell.get("planned"))
        got = [_count(cell.get("sft"))] + ([_count(cell.get("preference"))] if pref else [])
        return max(0, want - min(got))

    shorts = [c for c in cells if short_by(c) > 0]
    delivered = f"{sft:,} SFT records" + (f" and {preference:,} preference pairs" if pref else "")
    lines = ["## Plan vs delivered", "", f"Planned {planned:,} records; delivered {delivered}."]
    if shorts or composition.get("short"):
        lines[-1] += f" {len(shorts):,} of {len(cells):,} cells are short of their plan."
    else:
        lines[-1] += f" Every one of the {len(cells):,} cells is full."
    spend = []
    if _count(composition.get("candidates")):
        limit = _count(composition.get("max_candidates"))
        spend.append(
            f"{_count(composition['candidates']):,} candidates generated"
            + (f" of at most {limit:,}" if limit else "")
        )
    if _count(composition.get("rounds")):
        spend.append(f"{_count(composition['rounds']):,} top-up rounds")
    if spend:
        lines += ["", "; ".join(spend).capitalize() + "."]
    if composition.get("stopped"):
        lines += ["", f"Generation stopped: {_one_line(str(composition['stopped']))}."]
    header = ["Planned", "SFT"] + (["Preference"] if pref else [])
    for key, title in _CELL_DIMENSIONS:
        values = [str(c.get(key) or "") for c in cells]
        if not any(values):
            continue  # the recipe does not control this dimension
        totals: dict[str, list[int]] = {}
        for cell, value in zip(cells, values, strict=True):
            row = totals.setdefault(value or "(none)", [0, 0, 0])
            row[0] += _count(cell.get("planned"))
            row[1] += _count(cell.get("sft"))
            row[2] += _count(cell.get("preference"))
        rows = [[v, *t[: len(header)]] for v, t in totals.items()]
        lines += ["", f"### {title}", "", *_table([title, *header], rows, right=len(header))]
    if shorts:
        named = [(k, t) for k, t in _CELL_DIMENSIONS if any(c.get(k) for c in cells)]
        rows = []
        for cell in shorts[:MAX_SHORT_CELLS]:
            given = cell.get("reasons")
            reasons: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
            why = ", ".join(
                f"{r}: {_count(n)}"
                for r, n in sorted(reasons.items(), key=lambda kv: (-_count(kv[1]), str(kv[0])))
            )
            rows.append(
                [
                    *(cell.get(k) or "-" for k, _ in named),
                    _count(cell.get("planned")),
                    _count(cell.get("sft")),
                    *([_count(cell.get("preference"))] if pref else []),
                    _count(cell.get("candidates")),
                    why or "-",
                ]
            )
        columns = [t for _, t in named] + header + ["Candidates", "Why short"]
        lines += ["", "### Short cells", "", *_table(columns, rows)]
        if len(shorts) > MAX_SHORT_CELLS:
            lines += ["", f"({len(shorts) - MAX_SHORT_CELLS:,} more short cells.)"]
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
    if "images/quality.svg" in images:
        lines += ["", "![Quality: selected records against all candidates](images/quality.svg)"]
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


def _untagged(report: Mapping[str, Any]) -> list[str]:
    """How many candidates the tagger left without tags and why (report.tacos), so a reader
    knows they were clustered apart rather than by what they are about. Nothing when every
    candidate was tagged (or clustering was not by tags)."""
    tacos = report.get("tacos")
    if not isinstance(tacos, Mapping) or not _count(tacos.get("tag_failures")):
        return []
    failures = _count(tacos["tag_failures"])
    clustered = failures + _count(tacos.get("tagged"))
    given = tacos.get("tag_failure_reasons")
    reasons = [r for r in given if isinstance(r, Mapping)] if isinstance(given, list) else []
    rows: list[list[object]] = [
        [r.get("stage") or "-", r.get("reason") or "-", _count(r.get("items"))] for r in reasons
    ]
    # The report keeps the most common reasons only; the rest are summed so the rows add up.
    rest = failures - sum(_count(r.get("items")) for r in reasons)
    if rest > 0:
        rows.append(["-", "(other reasons)", rest])
    lines = [
        f"{failures:,} of {clustered:,} candidates went untagged: the tagger gave them no tags,"
        " so they were clustered with the candidates that have none."
    ]
    if rows:
        lines += ["", *_table(["Stage", "Why untagged", "Candidates"], rows, right=1)]
    return lines


def _clusters(report: Mapping[str, Any], images: Sequence[str]) -> list[str]:
    lines: list[str] = []
    if "images/clusters.svg" in images:
        chart = "![Cluster sizes and selected records](images/clusters.svg)"
        lines += ["", "Candidates (size) and selected records per cluster.", "", chart]
    untagged = _untagged(report)
    if untagged:
        lines += ["", *untagged]
    return ["## Clusters", *lines] if lines else []


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
            [f"Contaminated ({benchmark_name(str(bench))}) removed", _value(n)]
            for bench, n in contaminated.items()
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
    """The share of records per quality bucket, every candidate against the selected ones."""
    series = []
    for scores, label, colour, opacity in (
        (candidates, "All candidates", BLUE, 0.45),
        (selected, "Selected", ORANGE, 0.85),
    ):
        counts = histogram(scores)
        total = sum(counts)
        shares = [100 * c / total if total else 0.0 for c in counts]
        series.append((f"{label} ({total:,})", colour, opacity, shares))
    svg = paired_columns(
        BUCKETS,
        series,
        x_label="Quality (1-100)",
        y_label="Share of records (%)",
        title="Quality: selected records against all candidates",
    )
    path.write_text(svg, encoding="utf-8")


def _short_label(label: str) -> str:
    text = _one_line(label) or "(none)"
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "\u2026"


def cluster_bars(
    sizes: Counter[str], selected: Counter[str], top: int = MAX_CLUSTER_BARS
) -> list[tuple[str, int, int]]:
    """(label, size, selected) per bar, largest cluster first: the ``top`` largest one by one,
    the rest summed as one "other (N clusters)" bar last."""
    clusters = sorted(set(sizes) | set(selected), key=lambda c: (-sizes[c], -selected[c], c))
    bars = [(_short_label(c), sizes[c], selected[c]) for c in clusters[:top]]
    rest = clusters[top:]
    if rest:
        bars.append(
            (
                f"other ({len(rest):,} clusters)",
                sum(sizes[c] for c in rest),
                sum(selected[c] for c in rest),
            )
        )
    return bars


def _cluster_chart(path: Path, sizes: Counter[str], selected: Counter[str]) -> None:
    """Candidates and selected records per cluster as horizontal bars, largest on top, one
    label a row (so labels never overlap); past ``MAX_CLUSTER_BARS`` the rest share a bar."""
    total = len(set(sizes) | set(selected))
    title = f"Clusters ({total:,})"
    if total > MAX_CLUSTER_BARS:
        title += f": the {MAX_CLUSTER_BARS} largest, the rest as other"
    svg = horizontal_bars(cluster_bars(sizes, selected), ("Size", "Selected"), "Records", title)
    path.write_text(svg, encoding="utf-8")


def write_card(out_dir: Path, card: CardInput) -> list[Path]:
    """Write ``README.md`` and its ``images/*.svg`` into ``out_dir``.

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
        _quality_chart(out_dir / "images" / "quality.svg", selected, candidates)
        written.append(Path("images/quality.svg"))
    if sizes or cluster_selected:
        _cluster_chart(out_dir / "images" / "clusters.svg", sizes, cluster_selected)
        written.append(Path("images/clusters.svg"))
    images = [p.as_posix() for p in written]

    header = yaml.safe_dump(
        _header(card, formats, n), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    sections = [
        _summary(card, formats, n),
        _loading(card, formats),
        _plan_vs_delivered(card.report),
        _composition(card),
        _quality(card, images),
        _clusters(card.report, images),
        _dedup(card.report),
        _methods(card.report, card.method),
        _settings(_public_settings(card.settings)),
    ]
    body = "\n\n".join("\n".join(section) for section in sections if section)
    (out_dir / "README.md").write_text(f"---\n{header}---\n\n{body}\n", encoding="utf-8")
    return [Path("README.md"), *written]
