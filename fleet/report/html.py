"""One self-contained HTML file: tables and inline SVG charts (svg.py), no JavaScript and no
network, a few tens of KB.

Billed money and simulated machines' "would cost" are never added into one bar: they are separate
charts or side-by-side series, and the would-cost ones are drawn light with a dashed outline.
Sections: spend per day (billed; would cost), spend by project, budgets this month with a
forecast, GPU utilisation per day, who pays for idle GPUs, and the top runs with project, user and
command.
"""
from __future__ import annotations

import html
from datetime import date, timedelta

from ..money.budget import format_usd
from .budgets import MonthBudgets
from .build import Report, Row
from ..render.html import table_html
from .view import WOULD_COST_NOTE, notes, period_text, report_table
from .svg import Mark, Series, color, columns, day_labels, hbars, line, no_data

esc = html.escape
COMMAND_CHARS = 120      # a long command is cut in the table (the whole one is in the tooltip)
MAX_DAYS = 400


def _usd(micro: float) -> float:
    return micro / 1_000_000


def _tick_usd(value: float) -> str:
    return format_usd(round(value * 1_000_000))


def _calendar(days: list[str]) -> list[str]:
    """Every day from the first to the last with entries, so a quiet day shows as a gap, not as
    nothing (a period beyond MAX_DAYS keeps only the days with entries)."""
    if not days:
        return []
    first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    if (last - first).days >= MAX_DAYS:
        return list(days)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _section(name: str, title: str, body: str, caption: str = "") -> str:
    cap = f'<p class="caption">{esc(caption)}</p>' if caption else ""
    return f'<section id="{name}"><h2>{esc(title)}</h2>{cap}{body}</section>'


def _per_day(report: Report, table: dict[str, dict[str, int]], *, simulated: bool, label: str, empty: str) -> str:
    projects = [r.key for r in report.by_project if any(table.get(r.key, {}).values())]
    if not projects:
        return no_data(label, empty)
    colours = {r.key: color(i) for i, r in enumerate(report.by_project)}
    days = _calendar(report.days)
    series = [Series(p, [_usd(table[p].get(d, 0)) for d in days], colours[p], simulated,
                     [format_usd(table[p].get(d, 0)) for d in days]) for p in projects]
    return columns(label, day_labels(days), series, fmt=_tick_usd)


def _billed_and_would(label: str, rows: list[Row], names: list[str]) -> str:
    series = [Series("billed", [_usd(r.cost_micro) for r in rows], "#4269d0", False,
                     [format_usd(r.cost_micro) for r in rows])]
    if any(r.would_cost_micro for r in rows):
        series.append(Series("would cost (simulated)", [_usd(r.would_cost_micro) for r in rows], "#ef8a17", True,
                             [format_usd(r.would_cost_micro) for r in rows]))
    return hbars(label, names, series, fmt=_tick_usd)


def _util(report: Report) -> str:
    days = [d for d, v in report.daily_util.items() if v is not None]
    if not days:
        return no_data("GPU utilisation per day", "no data: no GPU telemetry in this period")
    calendar = _calendar(report.days)
    return line("GPU utilisation per day", day_labels(calendar), [report.daily_util.get(d) for d in calendar],
                top_value=100, fmt=lambda v: f"{v:.0f} %")


def _idle(report: Report) -> str:
    payers = report.idle_payers[:15]
    if not payers:
        return no_data("idle GPU cost by user and project", "no data: no idle GPU-hours recorded in this period")
    series = [Series("idle, billed", [_usd(r.idle_billed_micro) for r in payers], "#c0392b", False,
                     [f"{format_usd(r.idle_billed_micro)}" for r in payers])]
    if any(r.idle_would_cost_micro for r in payers):
        series.append(Series("idle, would cost (simulated)", [_usd(r.idle_would_cost_micro) for r in payers],
                             "#ef8a17", True, [format_usd(r.idle_would_cost_micro) for r in payers]))
    chart = hbars("idle GPU cost by user and project", [r.key for r in payers], series, fmt=_tick_usd)
    head = "<tr><th>#</th><th>user · project</th><th>idle GPU-h</th><th>idle cost (billed)</th>" \
           "<th>idle would cost</th><th>GPU-h</th><th>idle share</th></tr>"
    body = "".join(
        f"<tr><td class=n>{i}</td><td>{esc(r.key)}</td><td class=n>{r.idle_gpu_hours:,.2f}</td>"
        f"<td class=n>{esc(format_usd(r.idle_billed_micro))}</td>"
        f"<td class=n>{esc(format_usd(r.idle_would_cost_micro)) if r.idle_would_cost_micro else '-'}</td>"
        f"<td class=n>{r.gpu_hours:,.2f}</td>"
        f"<td class=n>{(r.idle_gpu_s / r.gpu_s * 100 if r.gpu_s else 0):.0f} %</td></tr>"
        for i, r in enumerate(payers, 1))
    return chart + f"<table class=ranking><thead>{head}</thead><tbody>{body}</tbody></table>"


def _run_name(report: Report, key: str) -> str:
    info = report.run_info.get(key)
    return f"{key} ({info.user}, {info.project})" if info else key


def _top_runs(report: Report) -> str:
    runs = report.top_runs
    if not runs:
        return no_data("top runs by cost", "no runs in this period")
    chart = _billed_and_would("top runs by cost", runs, [_run_name(report, r.key) for r in runs])
    rows = []
    for r in runs:
        info = report.run_info.get(r.key)
        command = (info.command if info else None) or ""
        short = command if len(command) <= COMMAND_CHARS else command[:COMMAND_CHARS - 1] + "…"
        util = r.mean_gpu_util
        rows.append(f"<tr><td><code>{esc(r.key)}</code></td><td>{esc(info.project if info else '')}</td>"
                    f"<td>{esc(info.user if info else '')}</td>"
                    f'<td class=cmd title="{esc(command)}"><code>{esc(short) or "(not recorded here)"}</code></td>'
                    f"<td class=n>{esc(format_usd(r.cost_micro))}</td>"
                    f"<td class=n>{esc(format_usd(r.would_cost_micro)) if r.would_cost_micro else '-'}</td>"
                    f"<td class=n>{r.gpu_hours:,.2f}</td><td class=n>{'n/a' if util is None else f'{util:.0f} %'}"
                    f"</td></tr>")
    head = "<tr><th>run</th><th>project</th><th>user</th><th>command (secrets masked)</th><th>cost</th>" \
           "<th>would cost</th><th>GPU-h</th><th>GPU util</th></tr>"
    return chart + f"<table class=runs><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _budgets(b: MonthBudgets | None) -> tuple[str, str]:
    if b is None:
        return no_data("budgets this month", "no budget figures in this report (`fleet report` adds them)"), ""
    caption = (f"{b.month}, {b.elapsed_s / b.month_s * 100:.0f} % of the month gone. Budgets count billed and "
               "would cost alike (as fleet enforces them); the forecast is this month's spend so far continued "
               "at its average daily rate to the month's end.")
    if not b.any_limit:
        caption += " No [budgets] project_monthly / user_monthly in fleet.toml here: spend shown without limits."
    if not b.lines:
        return no_data("budgets this month", f"no spend in {b.month}"), caption
    names = [f"{line.scope} {line.name}" for line in b.lines]
    series = [Series("billed", [_usd(x.billed_micro) for x in b.lines], "#4269d0", False,
                     [format_usd(x.billed_micro) for x in b.lines])]
    if any(x.would_micro for x in b.lines):
        series.append(Series("would cost (simulated)", [_usd(x.would_micro) for x in b.lines], "#ef8a17", True,
                             [format_usd(x.would_micro) for x in b.lines]))
    marks = [[*([Mark(_usd(x.limit_micro), f"budget {format_usd(x.limit_micro)}")] if x.limit_micro else []),
              Mark(_usd(x.forecast_micro), f"forecast {format_usd(x.forecast_micro)}", "#555", dashed=True)]
             for x in b.lines]
    chart = hbars("spend against budget this month", names, series, fmt=_tick_usd, marks=marks)
    legend = ('<p class="caption"><span class="key budget"></span> budget &nbsp; '
              '<span class="key forecast"></span> forecast at the month\'s end</p>')
    rows = []
    for x in b.lines:
        used = "-" if x.used_fraction is None else f"{x.used_fraction * 100:.0f} %"
        if x.limit_micro is None:
            state = "no budget"
        elif x.counted_micro > x.limit_micro:
            state = "over budget"
        else:
            state = "forecast over budget" if x.forecast_over else "on track"
        rows.append(f"<tr class='{state.replace(' ', '-')}'><td>{x.scope}</td><td>{esc(x.name)}</td>"
                    f"<td class=n>{esc(format_usd(x.limit_micro)) if x.limit_micro else '-'}</td>"
                    f"<td class=n>{esc(format_usd(x.billed_micro))}</td>"
                    f"<td class=n>{esc(format_usd(x.would_micro)) if x.would_micro else '-'}</td>"
                    f"<td class=n>{used}</td><td class=n>{esc(format_usd(x.forecast_micro))}</td>"
                    f"<td>{state}</td></tr>")
    head = "<tr><th>scope</th><th>name</th><th>budget</th><th>billed</th><th>would cost</th><th>used</th>" \
           "<th>forecast</th><th></th></tr>"
    return chart + legend + f"<table class=budgets><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>", \
        caption


def to_html(report: Report, budgets: MonthBudgets | None = None) -> str:
    t = report.total
    budgets_body, budgets_caption = _budgets(budgets if budgets is not None else report.budgets)
    sections = [
        _section("spend-over-time", "Billed spend per day, by project",
                 _per_day(report, report.daily_billed, simulated=False, label="billed spend per day",
                          empty="no data: nothing billed in this period")),
        _section("would-cost-over-time", "Would cost per day, by project (simulated machines, not spend)",
                 _per_day(report, report.daily_would, simulated=True, label="would cost per day",
                          empty="no data: no simulated machines in this period")),
        _section("spend-by-project", "Spend by project: billed and would cost side by side",
                 _billed_and_would("spend by project", report.by_project, [r.key for r in report.by_project])
                 if report.by_project else no_data("spend by project")),
        _section("budgets", "Spend against budget this month", budgets_body, budgets_caption),
        _section("gpu-utilisation", "Mean GPU utilisation per day", _util(report)),
        _section("idle-gpu-hours", f"Who pays for idle GPUs (below {report.idle_percent:g} % utilisation)",
                 _idle(report)),
        _section("top-runs", f"Top {len(report.top_runs) or ''} runs by cost".replace("  ", " "), _top_runs(report)),
    ]
    note_html = "".join(f"<li>{esc(n)}</li>" for n in notes(report))
    would = f" · would cost {esc(format_usd(t.would_cost_micro))} (simulated)" if t.would_cost_micro else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fleet cost report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 960px; padding: 0 16px; color: #222; }}
h1 {{ margin-bottom: 4px; }} h2 {{ font-size: 1.15em; margin: 28px 0 4px; }}
.headline {{ font-size: 1.1em; }} .caption {{ color: #555; margin: 2px 0 8px; font-size: 0.92em; }}
table {{ border-collapse: collapse; margin: 12px 0 24px; font-size: 0.92em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td.cmd code {{ word-break: break-all; }} table.runs td:first-child {{ white-space: nowrap; }}
tr.total td {{ font-weight: bold; }}
tr.over-budget td {{ color: #b03a2e; font-weight: 600; }} tr.forecast-over-budget td:last-child {{ color: #b9770e; }}
.key {{ display: inline-block; width: 14px; height: 0; vertical-align: middle; border-top: 3px solid #c0392b; }}
.key.forecast {{ border-top: 3px dashed #555; }}
svg {{ display: block; margin: 4px 0 8px; }}
</style></head><body>
<h1>fleet cost report by {esc(report.by)}</h1>
<p>Period: {esc(period_text(report))} · {report.entries} ledger entries</p>
<p class="headline"><b>Billed {esc(format_usd(t.cost_micro))}</b>{would} · {t.gpu_hours:,.1f} GPU-h ·
{t.idle_gpu_hours:,.1f} idle GPU-h · {len(t.runs)} run{'' if len(t.runs) == 1 else 's'}</p>
<ul class="notes">{note_html}</ul>
{table_html(report_table(report))}
{''.join(sections)}
<p class="caption">{esc(WOULD_COST_NOTE)}.</p>
</body></html>
"""
