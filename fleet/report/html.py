"""One self-contained HTML file with charts (plotly, its JavaScript inlined: no network to view it).

Charts: spend over time (per day, stacked by project), spend by project (billed and would cost),
GPU utilisation per day, idle GPU-hours and their cost by project, and the top runs.
"""
from __future__ import annotations

import html

from .build import Report
from .render import _TEXT_HEADERS, _cells, notes, period_text


def _usd(micro: float) -> float:
    return round(micro / 1_000_000, 2)


def _figures(report: Report) -> list[tuple[str, object]]:
    import plotly.graph_objects as go

    layout = dict(template="plotly_white", height=360, margin=dict(l=60, r=20, t=50, b=50))
    figs = []

    spend = go.Figure(layout=dict(title="Spend per day by project (USD, billed + would cost)",
                                  barmode="stack", **layout))
    for project, per_day in sorted(report.daily_by_project.items()):
        spend.add_bar(name=project, x=report.days, y=[_usd(per_day.get(d, 0)) for d in report.days])
    figs.append(("spend-over-time", spend))

    projects = [r.key for r in report.by_project]
    by_project = go.Figure(layout=dict(title="Spend by project (USD)", barmode="stack", **layout))
    by_project.add_bar(name="billed", x=projects, y=[_usd(r.cost_micro) for r in report.by_project])
    by_project.add_bar(name="would cost (local)", x=projects, y=[_usd(r.would_cost_micro) for r in report.by_project])
    figs.append(("spend-by-project", by_project))

    util = go.Figure(layout=dict(title="Mean GPU utilisation per day (%)", yaxis=dict(range=[0, 100]), **layout))
    util_days = [d for d, v in report.daily_util.items() if v is not None]
    util.add_scatter(name="GPU utilisation", x=util_days, y=[round(report.daily_util[d], 1) for d in util_days],
                     mode="lines+markers")
    figs.append(("gpu-utilisation", util))

    idle = go.Figure(layout=dict(title=f"Idle GPU-hours (below {report.idle_percent:g} %) and their cost", **layout))
    idle.add_bar(name="idle GPU-hours", x=projects, y=[round(r.idle_gpu_hours, 2) for r in report.by_project],
                 text=[f"${_usd(r.idle_cost_micro):,.2f}" for r in report.by_project], textposition="outside",
                 hovertemplate="%{x}: %{y} idle GPU-h, cost %{text}<extra></extra>")
    figs.append(("idle-gpu-hours", idle))

    runs = list(reversed(report.top_runs))
    top = go.Figure(layout=dict(title=f"Top {len(runs)} runs by cost (USD, billed + would cost)",
                                **{**layout, "margin": dict(l=220, r=20, t=50, b=50)}))
    top.add_bar(x=[_usd(r.total_micro) for r in runs], y=[r.key for r in runs], orientation="h", name="cost")
    figs.append(("top-runs", top))

    if report.empty:
        for _, fig in figs:
            fig.add_annotation(text="no data in this period", showarrow=False, xref="paper", yref="paper",
                               x=0.5, y=0.5, font=dict(size=18, color="#888"))
    return figs


def _table(report: Report) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in [report.by, *_TEXT_HEADERS])
    body = "".join("<tr>" + f"<td>{esc(r.key)}</td>" + "".join(f"<td class=n>{esc(c)}</td>" for c in _cells(r))
                   + "</tr>" for r in report.rows)
    total = "<tr class=total><td>total</td>" + "".join(f"<td class=n>{esc(c)}</td>"
                                                        for c in _cells(report.total)) + "</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}{total}</tbody></table>"


def to_html(report: Report) -> str:
    parts = []
    for i, (name, fig) in enumerate(_figures(report)):
        # The whole plotly.js goes in once, with the first chart; the file works offline.
        parts.append(f'<section id="{name}">' + fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                                                             config={"displaylogo": False}) + "</section>")
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes(report))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>fleet cost report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0 24px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.total td {{ font-weight: bold; }}
section {{ margin-bottom: 12px; }}
</style></head><body>
<h1>fleet cost report by {html.escape(report.by)}</h1>
<p>Period: {html.escape(period_text(report))} · {report.entries} ledger entries</p>
<ul class="notes">{note_html}</ul>
{_table(report)}
{''.join(parts)}
</body></html>
"""
