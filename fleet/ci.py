"""CI mode: where a run came from (commit, branch, PR, workflow run), secrets kept out of every
line fleet prints, a short cancellation grace, and the GitHub job summary/outputs at the end.

The CLI turns CI mode on with `--ci` or when the environment says CI (CI=true, GITHUB_ACTIONS=true,
GITLAB_CI=true) and passes it as `RunOptions(ci=True)`; library callers opt in the same way, so a
test suite running inside CI does not report into the job summary. In CI mode the pipeline
(fleet/run/pipeline.py) puts the CI context into the summary, shortens the graceful stop on
cancellation, and registers `CIReport`, an observer that writes the reports when the run ends.
"""
from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

from .run.observers import RunObserver
# Masker and secret_names live in fleet/masking.py (records and the state use them too).
from .masking import MASK, Masker, secret_names  # noqa: F401  (re-exported)

# GitHub sends SIGINT on cancellation, SIGTERM ~7.5 s later, then SIGKILL. Stopping the experiment
# gracefully for 3 s leaves time to fetch outputs and release every machine inside that window.
CI_CANCEL_GRACE_S = 3.0
# GitLab sends one SIGTERM, then SIGKILL after a grace that depends on its executor: no second signal
# ever hurries fleet, and a fetch of gigabytes of outputs outlasted the grace, so the SIGKILL came
# before the release and the machines ran, billed, to their deadline. From a SIGTERM fleet takes at
# most this long (the experiment's graceful stop and the fetch together) before it hurries as a
# second signal would: the rest of the fetch is left, marked incomplete, and the machines released.
# 3 s of graceful stop, 2 s of fetch, then the release and the summary: inside a grace of 10 s.
GITLAB_STOP_LIMIT_S = 5.0
_TRUE = ("1", "true", "yes")


def env_says_ci(environ: Mapping[str, str] | None = None) -> bool:
    e = os.environ if environ is None else environ
    return (e.get("CI", "").lower() in _TRUE or e.get("GITHUB_ACTIONS") == "true"
            or e.get("GITLAB_CI", "").lower() in _TRUE)


def cancel_grace_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The CI default for the SIGTERM→SIGKILL grace of a cancelled run, or None when FLEET_GRACE
    is set (fleet.run.execute.grace_s() then applies that value, in CI as anywhere)."""
    e = os.environ if environ is None else environ
    return None if e.get("FLEET_GRACE", "").strip() else CI_CANCEL_GRACE_S


def stop_limit_s(environ: Mapping[str, str] | None = None, warn=None) -> float | None:
    """Seconds from a SIGTERM after which a CI run hurries (fleet/run/signals.py): under GitLab,
    FLEET_STOP_LIMIT or GITLAB_STOP_LIMIT_S; elsewhere FLEET_STOP_LIMIT if set, else None (GitHub's
    own second signal hurries the run). A value that is no number of seconds is said, and the
    default taken: a CI job must still release its machines."""
    e = os.environ if environ is None else environ
    gitlab = e.get("GITLAB_CI", "").lower() in _TRUE
    text = e.get("FLEET_STOP_LIMIT", "").strip()
    if not text:
        return GITLAB_STOP_LIMIT_S if gitlab else None
    try:
        value = float(text)
        if not 0 <= value < float("inf"):
            raise ValueError(text)
    except ValueError:
        if warn is not None:
            warn(f"FLEET_STOP_LIMIT={text[:40]!r} is not a number of seconds: using {GITLAB_STOP_LIMIT_S:g}")
        return GITLAB_STOP_LIMIT_S
    import threading
    # Longer than a wait can take (292 years) is never: the limit's thread would end in OverflowError.
    return min(value, threading.TIMEOUT_MAX)


# -- where the run came from -----------------------------------------------------------------------

def _github_pr_number(e: Mapping[str, str]) -> int | None:
    match = re.fullmatch(r"refs/pull/(\d+)/(?:merge|head)", e.get("GITHUB_REF", ""))
    if match:
        return int(match.group(1))
    path = e.get("GITHUB_EVENT_PATH")
    if path and e.get("GITHUB_EVENT_NAME", "").startswith("pull_request"):
        try:
            event = json.loads(Path(path).read_text())
            number = (event.get("pull_request") or {}).get("number") or event.get("number")
            return int(number) if number is not None else None
        except (OSError, ValueError, TypeError, AttributeError):
            return None
    return None


def _github(e: Mapping[str, str]) -> dict[str, Any]:
    ref = e.get("GITHUB_REF", "")
    branch = e.get("GITHUB_HEAD_REF") or e.get("GITHUB_REF_NAME") or None
    if not branch and ref.startswith("refs/heads/"):
        branch = ref[len("refs/heads/"):]
    server = e.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repo, run_id = e.get("GITHUB_REPOSITORY"), e.get("GITHUB_RUN_ID")
    run_url = f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None
    attempt = e.get("GITHUB_RUN_ATTEMPT")
    if run_url and attempt and attempt != "1":
        run_url += f"/attempts/{attempt}"
    return {"provider": "github", "repository": repo, "sha": e.get("GITHUB_SHA"), "ref": ref or None,
            "branch": branch, "pr": _github_pr_number(e), "event": e.get("GITHUB_EVENT_NAME"),
            "workflow": e.get("GITHUB_WORKFLOW"), "job": e.get("GITHUB_JOB"), "run_id": run_id,
            "run_attempt": attempt, "run_url": run_url, "actor": e.get("GITHUB_ACTOR")}


def _gitlab(e: Mapping[str, str]) -> dict[str, Any]:
    mr = e.get("CI_MERGE_REQUEST_IID")
    return {"provider": "gitlab", "repository": e.get("CI_PROJECT_PATH"), "sha": e.get("CI_COMMIT_SHA"),
            "ref": e.get("CI_COMMIT_REF_NAME"),
            "branch": e.get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME") or e.get("CI_COMMIT_BRANCH")
            or e.get("CI_COMMIT_REF_NAME"),
            "pr": int(mr) if mr and mr.isdigit() else None, "event": e.get("CI_PIPELINE_SOURCE"),
            "workflow": e.get("CI_PIPELINE_NAME"), "job": e.get("CI_JOB_NAME"), "run_id": e.get("CI_PIPELINE_ID"),
            "run_url": e.get("CI_JOB_URL") or e.get("CI_PIPELINE_URL"), "actor": e.get("GITLAB_USER_LOGIN")}


def detect_context(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The CI facts worth keeping with a run (never tokens); {} outside CI."""
    e = os.environ if environ is None else environ
    if e.get("GITHUB_ACTIONS") == "true":
        found = _github(e)
    elif e.get("GITLAB_CI", "").lower() in _TRUE:
        found = _gitlab(e)
    elif env_says_ci(e):
        found = {"provider": "ci", "sha": e.get("CI_COMMIT_SHA") or e.get("GIT_COMMIT"),
                 "branch": e.get("CI_BRANCH") or e.get("GIT_BRANCH")}
    else:
        return {}
    return {k: v for k, v in found.items() if v not in (None, "")}


# -- secrets ---------------------------------------------------------------------------------------

class MaskedEvents:
    """Wraps the CLI's renderer: no secret value reaches stdout/stderr through a log, phase or warning."""

    def __init__(self, inner, masker: Masker):
        self.inner, self.mask = inner, masker

    def phase(self, name: str, detail: str = "") -> None:
        self.inner.phase(name, self.mask(detail))

    def log(self, label: str, stream: str, line: str) -> None:
        self.inner.log(label, stream, self.mask(line))

    def warn(self, message: str) -> None:
        self.inner.warn(self.mask(message))

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def masked_events(config, events):
    """CI start-up for the CLI: tell a GitHub runner which values to hide, mask fleet's own lines.

    The `::add-mask::` lines go to stderr (the runner reads workflow commands on both streams and
    never shows them), so `--json` keeps stdout pure JSON.
    """
    masker = Masker.for_config(config)
    if not masker:
        return events
    if os.environ.get("GITHUB_ACTIONS") == "true":
        sys.stderr.write("".join(line + "\n" for line in masker.github_commands()))
        sys.stderr.flush()
    return MaskedEvents(events, masker)


_reported: list[str] = []    # run ids whose CI report is written (one CLI process runs one `up`)


def reported(report_id: str) -> None:
    """A report of the command's own is written (a sweep's, whose pool writes none): a failure or a
    stop signal after it adds no "cancelled before the run started" report to the job summary."""
    _reported.append(report_id)


@contextmanager
def failures_reported():
    """Around `fleet up` in CI mode: a FleetError that ended the run before the hook reported it
    (bad config, budget refused, no sshd) still becomes a job summary and outputs; so does a job
    cancelled then (while its inputs are hashed), and SIGTERM, a runner's cancel, stops it as Ctrl-C
    does (exit 130) rather than killing it silently. The run installs its own handlers once it starts."""
    import signal
    import threading
    from .errors import ExitCode, FleetError

    def interrupt(*_):
        raise KeyboardInterrupt
    previous = (signal.signal(signal.SIGTERM, interrupt) if threading.current_thread() is threading.main_thread()
                else None)
    try:
        yield
    except FleetError as exc:
        _report_early(exc.one_line(), exc.exit_code)
        raise
    except KeyboardInterrupt:
        _report_early("cancelled before the run started", ExitCode.CANCELLED, "cancelled")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _report_early(message: str, exit_code: int, status: str = "error") -> None:
    if not _reported:
        from .ci_report import report_error
        try:
            report_error(message, exit_code, Masker.for_config(None), status)
        except OSError:
            pass


# -- the run observer ------------------------------------------------------------------------------

class CIReport(RunObserver):
    """Writes the GitHub job summary and step outputs when a run ends (succeeded, failed,
    budget-stopped or cancelled). Registered by the pipeline in CI mode only. Never fails the run."""

    def __init__(self, config):
        self.config = config

    def on_finish(self, ctx, summary) -> None:
        try:
            from .ci_report import report_run
            report_run(summary.to_json(), Path(ctx.run_dir), Masker.for_config(self.config))
            _reported.append(ctx.run_id)
        except Exception as exc:  # noqa: BLE001 — a report problem must not hide the run's own result
            ctx.events.warn(f"could not write the CI summary: {type(exc).__name__}: {exc}")
