"""Small inline SVG charts for the HTML report: no JavaScript, no library, a few KB each, readable
offline and in any browser (hover a bar or point for its exact figure, via SVG <title>).

Coordinates are floats; the figures printed are formatted by the caller from exact amounts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from html import escape
from typing import Callable, Sequence

PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5", "#9c6b4e",
           "#9498a0")
WIDTH = 900
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


@dataclass
class Series:
    name: str
    values: Sequence[float | None]
    color: str
    simulated: bool = False          # drawn hatched-light with a dashed outline: never mistaken for spend
    labels: Sequence[str] | None = None   # exact figure per value, for hover and value labels


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0 and round steps up to at least `top` (1, 2, 2.5 or 5 × a power of ten)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day_labels(days: Sequence[str]) -> list[str]:
    """'2026-12-02' → 'Dec 2'; where the days span years, the first day and each new year's say which."""
    spans_years = len({d[:4] for d in days}) > 1
    out, prev = [], None
    for d in days:
        day = date.fromisoformat(d)
        text = f"{MONTHS[day.month - 1]} {day.day}"
        if spans_years and (prev is None or prev[:4] != d[:4]):
            text += f" {day.year}"
        out.append(text)
        prev = d
    return out


def _svg(height: int, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
            f'role="img" aria-label="{escape(label)}" {FONT}>{body}</svg>')


def no_data(label: str, message: str = "no data in this period", height: int = 120) -> str:
    """A chart with nothing to draw says so, instead of showing empty axes."""
    return _svg(height, f'<rect x="0.5" y="0.5" width="{WIDTH - 1}" height="{height - 1}" fill="#fafafa" '
                        f'stroke="#ddd" rx="6"/><text class="no-data" x="{WIDTH / 2}" y="{height / 2 + 6}" '
                        f'text-anchor="middle" font-size="16" fill="#777">{escape(message)}</text>', label)


def _bar(x: float, y: float, w: float, h: float, s: Series, tip: str, cls: str = "bar") -> str:
    style = (f'fill="{s.color}" fill-opacity="0.28" stroke="{s.color}" stroke-dasharray="4 2"' if s.simulated
             else f'fill="{s.color}"')
    return (f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{max(h, 0.5):.1f}" '
            f'{style}><title>{escape(tip)}</title></rect>')


def _legend(series: Sequence[Series], y: float, x0: float = 60) -> str:
    out, x = [], x0
    for s in series:
        swatch = _bar(x, y - 10, 14, 12, s, s.name, "swatch")
        out.append(f'{swatch}<text x="{x + 19}" y="{y}" fill="#333">{escape(s.name)}</text>')
        x += 34 + 7 * len(s.name)
    return "".join(out)


def columns(label: str, categories: Sequence[str], series: Sequence[Series], *, fmt: Callable[[float], str],
            stacked: bool = True, height: int = 320) -> str:
    """Vertical bars per category (days); series stacked on each other (use for one kind of money only)
    or side by side."""
    left, right, top, bottom = 70, 16, 34, 44
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    n = max(len(categories), 1)
    if stacked:
        peak = max((sum(s.values[i] or 0 for s in series) for i in range(len(categories))), default=0)
    else:
        peak = max((v or 0 for s in series for v in s.values), default=0)
    ticks = nice_ticks(peak)
    scale = plot_h / ticks[-1]
    out = [_axis_y(ticks, left, top, plot_w, plot_h, fmt)]
    slot = plot_w / n
    bar_w = slot * 0.7 / (1 if stacked else max(len(series), 1))
    every = max(1, math.ceil(n / 16))
    for i, cat in enumerate(categories):
        x = left + slot * i + slot * 0.15
        base = top + plot_h
        for j, s in enumerate(series):
            v = s.values[i] or 0
            if v <= 0:
                continue
            h = v * scale
            tip = f"{cat}, {s.name}: {s.labels[i] if s.labels else fmt(v)}"
            if stacked:
                out.append(_bar(x, base - h, bar_w, h, s, tip))
                base -= h
            else:
                out.append(_bar(x + j * bar_w, top + plot_h - h, bar_w, h, s, tip))
        if i % every == 0:
            out.append(f'<text class="tick-x" x="{left + slot * (i + 0.5):.1f}" y="{top + plot_h + 18}" '
                       f'text-anchor="middle" fill="#444">{escape(cat)}</text>')
    out.append(_legend(series, 18))
    return _svg(height, "".join(out), label)


def _axis_y(ticks: Sequence[float], left: float, top: float, plot_w: float, plot_h: float,
            fmt: Callable[[float], str]) -> str:
    out = []
    for t in ticks:
        y = top + plot_h - t / ticks[-1] * plot_h
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{escape(fmt(t))}</text>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#999"/>')
    return "".join(out)


@dataclass
class Mark:
    """A vertical tick across one row of `hbars`: a budget, a forecast."""
    value: float
    title: str
    color: str = "#c0392b"
    dashed: bool = False


def hbars(label: str, categories: Sequence[str], series: Sequence[Series], *, fmt: Callable[[float], str],
          left: int = 220, marks: Sequence[Sequence[Mark]] | None = None) -> str:
    """Horizontal bars, one row per category, the series side by side (never stacked); optional
    marks per row (a budget line, a forecast)."""
    k = max(len(series), 1)
    row_h = 10 + 16 * k
    top, bottom, right = 34, 30, 110
    height = top + bottom + row_h * max(len(categories), 1)
    plot_w = WIDTH - left - right
    peak = max([*(v or 0 for s in series for v in s.values), *(m.value for row in marks or () for m in row)],
               default=0)
    ticks = nice_ticks(peak)
    out = []
    for t in ticks:
        x = left + t / ticks[-1] * plot_w
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="#555">'
                   f'{escape(fmt(t))}</text>')
    for i, cat in enumerate(categories):
        y0 = top + i * row_h + 5
        short = cat if len(cat) <= 34 else cat[:33] + "…"
        out.append(f'<text class="tick-y" x="{left - 8}" y="{y0 + 8 * k + 4}" text-anchor="end" fill="#333">'
                   f'{escape(short)}<title>{escape(cat)}</title></text>')
        for j, s in enumerate(series):
            v = s.values[i] or 0
            if v <= 0:
                continue
            text = s.labels[i] if s.labels else fmt(v)
            w = v / ticks[-1] * plot_w
            y = y0 + j * 16
            out.append(_bar(left, y, w, 13, s, f"{cat}, {s.name}: {text}"))
            out.append(f'<text x="{left + w + 5:.1f}" y="{y + 11}" fill="#333">{escape(text)}</text>')
        for m in (marks[i] if marks else ()):
            x = left + m.value / ticks[-1] * plot_w
            dash = ' stroke-dasharray="3 2"' if m.dashed else ""
            out.append(f'<line class="mark" x1="{x:.1f}" x2="{x:.1f}" y1="{y0 - 3}" y2="{y0 + 16 * k}" '
                       f'stroke="{m.color}" stroke-width="2.5"{dash}><title>{escape(m.title)}</title></line>')
    out.append(_legend(series, 18, left))
    return _svg(height, "".join(out), label)


def line(label: str, categories: Sequence[str], values: Sequence[float | None], *, top_value: float,
         fmt: Callable[[float], str], height: int = 260) -> str:
    """Points joined where consecutive; a missing value (None) breaks the line."""
    left, right, top, bottom = 70, 16, 20, 44
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    ticks = nice_ticks(top_value)
    n = max(len(categories), 1)
    slot = plot_w / n
    out = [_axis_y(ticks, left, top, plot_w, plot_h, fmt)]
    path, every = [], max(1, math.ceil(n / 16))
    for i, (cat, v) in enumerate(zip(categories, values)):
        x = left + slot * (i + 0.5)
        if i % every == 0:
            out.append(f'<text class="tick-x" x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle" '
                       f'fill="#444">{escape(cat)}</text>')
        if v is None:
            path.append(None)
            continue
        y = top + plot_h - v / ticks[-1] * plot_h
        path.append((x, y))
        out.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{PALETTE[0]}">'
                   f'<title>{escape(cat)}: {escape(fmt(v))}</title></circle>')
    segment: list[tuple[float, float]] = []
    for p in [*path, None]:
        if p is None:
            if len(segment) > 1:
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
                out.insert(1, f'<polyline points="{pts}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
            segment = []
        else:
            segment.append(p)
    return _svg(height, "".join(out), label)
