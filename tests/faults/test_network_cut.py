"""A machine's network cut mid-run: its sshd lives in its own network namespace and the test takes
the link down (packets dropped silently, as in a real partition). The cut machine must end itself
at its deadline, the healthy one must keep running (its heartbeats must not starve), and the
controller must end the run with a clear message instead of waiting on a dead connection."""
from __future__ import annotations

import json
import threading
import time

import pytest

from .harness import LedgerWatch, ProviderWatch, Verdict, judge_after
from .netns import Link, NetnsProvider, cannot_make_namespaces

pytestmark = pytest.mark.timeout(120)

TTL = 4


class Recorder:
    def __init__(self):
        self.lines: list[str] = []
        self.started: dict[str, threading.Event] = {"0": threading.Event(), "1": threading.Event()}

    def phase(self, name, detail=""):
        self.lines.append(f"fleet: {name}: {detail}")

    def log(self, label, stream, line):
        self.lines.append(f"[{label}] {line}")
        if line == "started" and label in self.started:
            self.started[label].set()

    def warn(self, message):
        self.lines.append(f"fleet: warning: {message}")


@pytest.fixture
def links():
    reason = cannot_make_namespaces()
    if reason:
        pytest.skip(f"cannot cut a machine's network here: {reason}")
    made = [Link() for _ in range(2)]
    yield made
    for link in made:
        link.destroy()


def test_network_cut_mid_run(box, links, monkeypatch):
    import fleet
    from fleet.config.loader import load_config
    for key, value in box.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLEET_HEARTBEAT_TTL", str(TTL))
    monkeypatch.chdir(box.exp)
    # rank 0 (healthy) finishes after 4 s; rank 1 (cut) would run 60 s
    box.write_experiment(command='echo started; sleep $((4 + 56 * FLEET_NODE_RANK)); echo finished', setup=None)
    config = load_config(box.exp / "fleet.toml", overrides={"gpus": 2})
    events, out = Recorder(), {}
    watch, ledger = ProviderWatch(box.home), LedgerWatch(box.home)

    def go():
        try:
            out["summary"] = fleet.up(config, events=events, provider=NetnsProvider(links))
        except Exception as exc:  # noqa: BLE001 — judged below
            out["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    assert events.started["1"].wait(30) and events.started["0"].wait(10), events.lines
    ledger.snapshot()
    cut_at = time.monotonic()
    links[1].cut()
    thread.join(60)
    ended_after = time.monotonic() - cut_at
    assert not thread.is_alive(), f"controller still waiting {ended_after:.0f}s after the cut: {events.lines}"
    assert ended_after < TTL + 15, events.lines
    summary = out.get("summary")
    assert summary is not None, out
    assert summary["exit_code"] == 10 and summary["failing_rank"] == "1" and summary["released"], summary
    assert "[0] finished" in events.lines, events.lines          # the healthy machine was not starved
    assert any("stopped answering" in line and "-n1" in line for line in events.lines), events.lines
    verdict = judge_after(box, Verdict(["network-cut@run"]), watch, ledger, ["\n".join(events.lines)])
    assert not verdict.leaked and verdict.ledger_lost == 0 and verdict.state_left == [], verdict.explain()
    assert not verdict.tracebacks, verdict.explain()
    assert json.loads((box.exp / "runs" / summary["run_id"] / "summary.json").read_text())["exit_code"] == 10
