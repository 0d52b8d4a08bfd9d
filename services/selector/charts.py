"""The dataset card's charts as SVG, written as text.

Two bar charts do not need a plotting library: building the SVG by hand takes a millisecond
where matplotlib took ~1 CPU-s to import and ~0.5 CPU-s to render on a replica's first job, and
~70 MiB held from then on. Vector images stay sharp at any zoom; the Hub, GitHub and the
console show them as they show PNG.

Every label (cluster labels come from model output) is escaped into text content, and the
document holds nothing but shapes and text: no script, no link, no external reference.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "BLUE",
    "ORANGE",
    "Bar",
    "horizontal_bars",
    "nice_ticks",
    "paired_columns",
    "text_width",
]

# matplotlib's first two default colours, which the PNG charts used.
BLUE = "#1f77b4"
ORANGE = "#ff7f0e"
_FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
# Average advance of a character at 1 px of font size, to size the label column.
_CHAR_EM = 0.6

# What XML 1.0 cannot hold, even escaped (control characters, lone surrogates): left out.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# (label, first value, second value): a cluster's size and its selected records.
Bar = tuple[str, int, int]


def nice_ticks(top: float, most: int = 6) -> list[float]:
    """Tick values from 0 to at least ``top``, at a 1/2/2.5/5 x 10^k step, ``most`` + 1 at most."""
    if not math.isfinite(top) or top <= 0:
        return [0.0, 1.0]
    raw = top / most
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def text_width(text: str, size: float) -> float:
    """About how wide ``text`` runs at ``size`` px: wide (CJK) characters a full em, others 0.6."""
    ems = sum(1.0 if unicodedata.east_asian_width(c) in "WF" else _CHAR_EM for c in text)
    return ems * size


def _xml_text(text: str) -> str:
    """``text`` as XML character data: escaped, and without what XML cannot hold."""
    return escape(_NOT_XML.sub("", text))


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _text(
    x: float, y: float, body: str, size: int = 12, anchor: str = "start", **extra: str
) -> str:
    attrs = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in extra.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{attrs}>'
        f"{_xml_text(body)}</text>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, opacity: float) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.0):.1f}" height="{max(h, 0.0):.1f}" '
        f'fill="{fill}" fill-opacity="{opacity}"/>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str = "#cccccc") -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
        f'stroke="{stroke}" stroke-width="1"/>'
    )


def _legend(x: float, y: float, entries: Sequence[tuple[str, str, float]]) -> list[str]:
    """Swatches and labels in one row from (x, y), the text's baseline."""
    parts = []
    for label, colour, opacity in entries:
        parts.append(_rect(x, y - 10, 14, 10, colour, opacity))
        parts.append(_text(x + 19, y, label))
        x += 19 + text_width(label, 12) + 18
    return parts


def _document(width: float, height: float, title: str, body: list[str]) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family={quoteattr(_FONT)} '
            f'role="img" aria-label={quoteattr(_NOT_XML.sub("", title))}>',
            f"<title>{_xml_text(title)}</title>",
            f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
            *body,
            "</svg>",
            "",
        ]
    )


def paired_columns(
    categories: Sequence[str],
    series: Sequence[tuple[str, str, float, Sequence[float]]],
    x_label: str,
    y_label: str,
    title: str,
) -> str:
    """Vertical bars, one slot a category, each series drawn over the one before it, narrower
    (``series``: label, colour, opacity, one value a category)."""
    width, height = 800.0, 400.0
    left, right, top, bottom = 64.0, 16.0, 40.0, 56.0
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v for *_, values in series for v in values), default=0.0)
    ticks = nice_ticks(peak)
    y_max = ticks[-1]
    body: list[str] = []
    for tick in ticks:
        y = top + plot_h - plot_h * tick / y_max
        body.append(_line(left, y, left + plot_w, y, "#e5e5e5"))
        body.append(_text(left - 6, y + 4, _number(tick), 11, "end"))
    slot = plot_w / max(len(categories), 1)
    widths = [0.8 - 0.3 * i / max(len(series) - 1, 1) for i in range(len(series))]
    for (_, colour, opacity, values), share in zip(series, widths, strict=True):
        for i, value in enumerate(values):
            h = plot_h * value / y_max
            x = left + slot * i + slot * (1 - share) / 2
            body.append(_rect(x, top + plot_h - h, slot * share, h, colour, opacity))
    for i, category in enumerate(categories):
        body.append(_text(left + slot * (i + 0.5), top + plot_h + 16, category, 11, "middle"))
    body.append(_line(left, top + plot_h, left + plot_w, top + plot_h, "#333333"))
    body.append(_line(left, top, left, top + plot_h, "#333333"))
    body.append(_text(left + plot_w / 2, height - 14, x_label, 12, "middle"))
    body.append(
        _text(
            16,
            top + plot_h / 2,
            y_label,
            12,
            "middle",
            transform=f"rotate(-90 16 {top + plot_h / 2:.1f})",
        )
    )
    body += _legend(left, 24, [(label, colour, opacity) for label, colour, opacity, _ in series])
    return _document(width, height, title, body)


def horizontal_bars(bars: Sequence[Bar], labels: tuple[str, str], x_label: str, title: str) -> str:
    """One row a bar, largest first on top, its label on the left: the first value as a wide
    pale bar, the second as a narrower dark one over it (``labels`` name the two)."""
    row = 30.0
    label_w = max((text_width(label, 11) for label, _, _ in bars), default=0.0) + 16
    left, right, top, bottom = max(label_w, 60.0), 24.0, 56.0, 52.0
    width = min(left + 560.0 + right, 1000.0)
    plot_w = width - left - right
    height = top + row * max(len(bars), 1) + bottom
    peak = max((max(a, b) for _, a, b in bars), default=0)
    ticks = nice_ticks(float(peak))
    x_max = ticks[-1]
    body: list[str] = []
    for tick in ticks:
        x = left + plot_w * tick / x_max
        body.append(_line(x, top, x, top + row * len(bars), "#e5e5e5"))
        body.append(_text(x, top + row * len(bars) + 16, _number(tick), 11, "middle"))
    for i, (label, first, second) in enumerate(bars):
        y = top + row * i
        body.append(_rect(left, y + row * 0.1, plot_w * first / x_max, row * 0.8, BLUE, 0.45))
        body.append(_rect(left, y + row * 0.25, plot_w * second / x_max, row * 0.5, ORANGE, 0.85))
        body.append(_text(left - 8, y + row / 2 + 4, label, 11, "end"))
    body.append(_line(left, top, left, top + row * len(bars), "#333333"))
    body.append(_text(left + plot_w / 2, height - 12, x_label, 12, "middle"))
    body.append(_text(left, 20, title, 14, "start", font_weight="bold"))
    body += _legend(left, 42, [(labels[0], BLUE, 0.45), (labels[1], ORANGE, 0.85)])
    return _document(width, height, title, body)
