"""A Comparison (fleet/report/compare.py) as a table, CSV, JSON, Markdown or HTML with an inline
SVG scatter of each parameter against the sorted metric (no script, no external asset)."""
from __future__ import annotations

import csv
import html
import io
import json

from .compare import Comparison, money

FORMATS = ("table", "csv", "json", "md", "html")


def rows(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    params, metrics = cmp.param_names, cmp.metric_names
    head = ["RUN", "TRIAL", "STATUS", *params, *metrics, "COST", "GPU-HOURS", "COMMIT", "DATA", "ENVIRONMENT"]
    body = []
    for r in cmp.runs:
        body.append([r.run_id, r.trial or "", r.status, *(r.params.get(p, "") for p in params),
                     *(f"{r.metrics[m]:g}" if m in r.metrics else "" for m in metrics), money(r.cost_usd),
                     "" if r.gpu_hours is None else f"{r.gpu_hours:.4g}", (r.code_commit or "")[:12],
                     " ".join(f"{k}={v[:12]}" for k, v in sorted(r.data.items())), r.environment or ""])
    return head, body


def footer(cmp: Comparison) -> list[str]:
    lines = []
    if cmp.sort:
        lines.append(f"sorted by {cmp.sort}, {'highest' if cmp.descending else 'lowest'} first")
    lines.append("inputs that differ: " + (", ".join(cmp.differ) if cmp.differ else "none"))
    lines += cmp.notes
    return lines


def as_text(cmp: Comparison) -> str:
    from ..render.text import printable_line
    # A row is one line: a value or a metric's name (metrics.json is the experiment's) with a line
    # break in it printed a run's row of its own.
    head, body = rows(cmp)
    head, body = [printable_line(c) for c in head], [[printable_line(c) for c in row] for row in body]
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    return "\n".join(out + [""] + [printable_line(line) for line in footer(cmp)]) + "\n"


def as_csv(cmp: Comparison) -> str:
    from ..render.data import csv_cell   # a parameter or metric name starting with = is no formula
    head, body = rows(cmp)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([csv_cell(c) for c in head])
    writer.writerows([csv_cell(c) for c in row] for row in body)
    return buf.getvalue()


def as_json(cmp: Comparison) -> str:
    return json.dumps(cmp.to_json(), indent=2) + "\n"


def as_markdown(cmp: Comparison) -> str:
    from ..render.markdown import escape
    head, body = rows(cmp)
    out = ["| " + " | ".join(escape(c) for c in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(escape(c) for c in row) + " |" for row in body]
    return "\n".join(out + [""] + [f"- {escape(line)}" for line in footer(cmp)]) + "\n"


def scatter(name: str, points: list[tuple[str, float, str]], metric: str) -> str:
    """One parameter (x: numeric when every value is a number, else categories) against the metric."""
    w, h, left, top, right, bottom = 420, 260, 56, 16, 16, 40
    pw, ph = w - left - right, h - top - bottom
    ys = [y for _, y, _ in points]
    lo, hi = min(ys), max(ys)
    hi = hi if hi > lo else lo + 1
    try:
        xs = [float(x) for x, _, _ in points]
        cats = None
    except ValueError:
        cats = sorted({x for x, _, _ in points})
        xs = [float(cats.index(x)) for x, _, _ in points]
    xlo, xhi = min(xs), max(xs)
    xhi = xhi if xhi > xlo else xlo + 1
    px = lambda x: left + (x - xlo) / (xhi - xlo) * pw if cats is None or len(cats) > 1 else left + pw / 2   # noqa
    py = lambda y: top + ph - (y - lo) / (hi - lo) * ph   # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" aria-label="{html.escape(name)} against {html.escape(metric)}">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>']
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.4g}</text>')
    ticks = [(float(i), c) for i, c in enumerate(cats)] if cats else [(x, f"{x:g}") for x in sorted(set(xs))]
    for x, label in ticks[:12]:
        parts.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" font-size="11" text-anchor="middle">'
                     f'{html.escape(label)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 6}" font-size="12" text-anchor="middle">{html.escape(name)}</text>')
    for (x_text, y, run), x in zip(points, xs):
        parts.append(f'<circle class="point" cx="{px(x):.1f}" cy="{py(y):.1f}" r="6" fill="#1f77b4" '
                     f'fill-opacity="0.8"><title>{html.escape(run)}: {html.escape(name)}={html.escape(x_text)}, '
                     f'{html.escape(metric)}={y:g}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def as_html(cmp: Comparison) -> str:
    head, body = rows(cmp)
    title = f"Sweep {cmp.sweep_id}" if cmp.sweep_id else "Runs compared"
    charts = []
    if cmp.sort:
        for name in cmp.param_names:
            points = [(r.params[name], r.metrics[cmp.sort], r.trial or r.run_id) for r in cmp.runs
                      if name in r.params and cmp.sort in r.metrics]
            if points:
                charts.append(f'<figure>{scatter(name, points, cmp.sort)}<figcaption>{html.escape(cmp.sort)} '
                              f'by {html.escape(name)}</figcaption></figure>')
    table = ("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead><tbody>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
             + "</tbody></table>")
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in footer(cmp))
    style = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
             "figure{display:inline-block;margin:8px}figcaption{font-size:12px;text-align:center}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<section id=\"charts\">{''.join(charts)}</section>{table}<ul>{notes}</ul></body></html>\n")


RENDER = {"table": as_text, "csv": as_csv, "json": as_json, "md": as_markdown, "html": as_html}
