"""What a CI job shows after a run: the GitHub job summary ($GITHUB_STEP_SUMMARY, Markdown), the
step outputs ($GITHUB_OUTPUT), and files in the run directory that any CI can keep as artifacts
(ci-summary.md, metrics.json merged over ranks). Every byte written here goes through the masker.
"""
from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Mapping

from .render import LABEL, RIGHT, Column, Document, Fields, Heading, Paragraph, Table
from .render.markdown import code, escape, to_markdown
from .run.metrics import METRICS_FILE

STATUS_ICONS = {"succeeded": "✅", "failed": "❌", "setup-failed": "❌", "cancelled": "⏹️",
                "budget-stopped": "💸", "error": "⚠️"}
# Identifiers, not results: shown as the row label or left out of the metrics table.
_ID_KEYS = {"rank", "local_rank", "node_rank", "world_size", "seed"}
MAX_METRIC_COLUMNS = 8


def collect_metrics(run_dir: Path) -> list[tuple[str, dict]]:
    """(label, metrics) for every metrics.json fetched from the machines, in rank order."""
    found = []
    for path in sorted(run_dir.glob(f"node-*/**/{METRICS_FILE}")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            rel = path.parent.relative_to(run_dir).as_posix()
            label = str(data["rank"]) if isinstance(data.get("rank"), int) else rel
            found.append((label, data))

    def key(item):
        label = item[0]
        return (0, int(label), "") if label.isdigit() else (1, 0, label)
    return sorted(found, key=key)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_columns(rows: list[tuple[str, dict]]) -> list[str]:
    """Numeric keys; fractional ones (accuracy, loss) before whole numbers (epochs, sizes)."""
    columns: list[str] = []
    for _label, data in rows:
        for k, v in data.items():
            if _is_number(v) and k not in _ID_KEYS and k not in columns:
                columns.append(k)
    fractional = {k for _l, d in rows for k, v in d.items() if isinstance(v, float)}
    columns.sort(key=lambda k: k not in fractional)   # stable: first-seen order within each group
    return columns[:MAX_METRIC_COLUMNS]


def merged_metrics(rows: list[tuple[str, dict]]) -> dict:
    columns = metric_columns(rows)
    mean = {}
    for c in columns:
        values = [d[c] for _l, d in rows if _is_number(d.get(c))]
        if values:
            mean[c] = round(sum(values) / len(values), 6)
    return {"ranks": {label: data for label, data in rows}, "mean": mean}


def _fmt(v: Any) -> str:
    """A value as text (floats to 4 significant digits); Markdown-escaped where it is used."""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return str(v)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s" if s >= 3600 else (
        f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s")


def gpu_hours(summary: dict) -> Decimal | None:
    if summary.get("gpu_hours") is not None:
        return Decimal(str(summary["gpu_hours"]))
    if summary.get("gpus") and summary.get("duration_s") is not None:
        return (Decimal(str(summary["gpus"])) * Decimal(str(summary["duration_s"])) / 3600).quantize(Decimal("0.0001"))
    return None


def cost_usd(summary: dict) -> tuple[str, bool]:
    """(amount in USD as text or "", shadow?): a shadow price is what simulated GPUs would cost."""
    for key, shadow in (("cost_usd", False), ("would_cost_usd", True), ("cost", False)):
        if summary.get(key) not in (None, ""):
            return str(summary[key]), shadow or bool(summary.get("simulated_gpus"))
    return "", False


def _cost(summary: dict) -> str:
    cost, shadow = cost_usd(summary)
    if not cost:
        return "unknown"
    try:
        text = f"${Decimal(cost):.4f}"
    except InvalidOperation:
        text = f"${cost}"
    if summary.get("budget_usd"):
        text += f" of a ${escape(summary['budget_usd'])} budget"
    return text + (" (would cost: simulated GPUs at a shadow price)" if shadow else "")


def summary_document(summary: dict, rows: list[tuple[str, dict]]) -> Document:
    """The job summary: a headline, the run's facts as a two-column table, the metrics per rank."""
    status = summary.get("status", "error")
    run_id = summary.get("run_id", "(not started)")
    facts = [("Status", escape(f"{status} (exit {summary.get('exit_code')})"))]
    if summary.get("failing_rank") is not None:
        facts.append(("First failing rank", escape(_fmt(summary["failing_rank"]))))
    if summary.get("message"):
        facts.append(("Message", escape(_fmt(summary["message"]))))
    facts.append(("Duration", _duration(summary.get("duration_s"))))
    facts.append(("Cost", _cost(summary)))
    hours = gpu_hours(summary)
    facts.append(("GPU-hours", str(hours) if hours is not None else "–"))
    if summary.get("machines"):
        sim = ", simulated" if summary.get("simulated_gpus") else ""
        facts.append(("Machines", f"{summary['machines']} × {escape(_fmt(summary.get('template', '?')))} "
                                  f"({summary.get('gpus')} GPU{'' if summary.get('gpus') == 1 else 's'}{sim}, "
                                  f"{escape(summary.get('provider'))})"))
    if "released" in summary:
        facts.append(("Machines released", "yes" if summary["released"] else "NO: run `fleet down --all`"))
    ci = summary.get("ci") or {}
    if ci.get("sha"):
        where = code(ci["sha"][:12]) + (f" on {code(ci['branch'])}" if ci.get("branch") else "")
        if ci.get("pr") is not None:
            where += f" · PR #{ci['pr']}"
        facts.append(("Commit", where))
    if ci.get("run_url"):
        facts.append(("Workflow run", escape(ci["run_url"])))
    if summary.get("record_hash"):
        facts.append(("Run record", code(summary["record_hash"][:16])))
    blocks: list = [Fields(facts, as_table=True)]
    columns = metric_columns(rows)
    if rows and columns:
        table = Table([Column("rank"), *(Column(c, align=RIGHT) for c in columns)],
                      [[label, *(_fmt(data.get(c, "")) for c in columns)] for label, data in rows])
        if len(rows) > 1:
            mean = merged_metrics(rows)["mean"]
            table.add("mean", *(_fmt(mean.get(c, "")) for c in columns), emphasis=LABEL)
        blocks += [Heading("Metrics", 4), table]
    elif summary.get("run_dir"):
        blocks.append(Paragraph("No metrics.json came back from the machines."))
    return Document(f"{STATUS_ICONS.get(status, '•')} fleet run {code(run_id)}: {escape(status)}", blocks, level=3)


def markdown(summary: dict, rows: list[tuple[str, dict]]) -> str:
    return to_markdown(summary_document(summary, rows)) + "\n"


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def github_outputs(values: dict[str, Any]) -> str:
    """$GITHUB_OUTPUT syntax; a value with a newline uses the heredoc form with a random delimiter."""
    out = []
    for name, value in values.items():
        text = "" if value is None else str(value)
        if "\n" in text or "\r" in text:
            delim = f"fleet_{uuid.uuid4().hex}"
            out.append(f"{name}<<{delim}\n{text}\n{delim}\n")
        else:
            out.append(f"{name}={text}\n")
    return "".join(out)


def report_run(summary: dict, run_dir: Path | None, mask: Callable[[str], str],
               environ: dict[str, str] | None = None) -> None:
    """Scrub logs, merge metrics, write ci-summary.md, and the GitHub summary/outputs when set."""
    e = os.environ if environ is None else environ
    rows: list[tuple[str, dict]] = []
    metrics_path = ""
    if run_dir is not None and run_dir.is_dir():
        from .masking import Masker
        if isinstance(mask, Masker):   # logs and fetched outputs become artifacts: no secret in them either
            for path in sorted(run_dir.rglob("*")):
                mask.scrub_file(path)
        rows = collect_metrics(run_dir)
        if rows:
            merged = run_dir / METRICS_FILE
            merged.write_text(mask(json.dumps(merged_metrics(rows), indent=2, sort_keys=True)) + "\n")
            metrics_path = str(merged)
    hours = gpu_hours(summary)
    publish(mask(markdown(summary, rows)), {
        "run-id": summary.get("run_id", ""), "status": summary.get("status", "error"),
        "exit-status": summary.get("exit_code", ""), "cost": cost_usd(summary)[0],
        "gpu-hours": "" if hours is None else hours, "metrics-path": metrics_path,
        "outputs-dir": str(run_dir) if run_dir is not None and run_dir.is_dir() else "",
    }, run_dir, mask, e)


def publish(text: str, outputs: dict[str, Any], directory: Path | None, mask: Callable[[str], str],
            environ: Mapping[str, str]) -> None:
    """A report's Markdown `text` (masked already) as `directory`/ci-summary.md and the GitHub job
    summary, and `outputs` as step outputs (masked here), each where it is set."""
    if directory is not None and directory.is_dir():
        (directory / "ci-summary.md").write_text(text)
    if environ.get("GITHUB_STEP_SUMMARY"):
        _append(environ["GITHUB_STEP_SUMMARY"], text)
    if environ.get("GITHUB_OUTPUT"):
        _append(environ["GITHUB_OUTPUT"], mask(github_outputs(outputs)))


def report_error(message: str, exit_code: int, mask: Callable[[str], str], status: str = "error") -> None:
    """A run that failed before any machine was leased (bad config, budget refused, …), or was cancelled then."""
    report_run({"status": status, "exit_code": exit_code, "message": message}, None, mask)
