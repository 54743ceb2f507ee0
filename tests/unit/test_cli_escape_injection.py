"""What fleet prints from data others wrote must not drive the terminal: a file named with
`ESC ] 52 ; c ; … BEL` in a snapshotted tree (a teammate's data directory, a shared store) set the
reader's clipboard from `fleet snapshot show/diff`, and a run record's command (a teammate's, in a
shared state) did the same from `fleet runs show/diff/compare` and `fleet audit`; a line break in a
file name forged a line of the listing. An error message quoting such a value (a host name) went to
stderr as it was. Control characters are now shown (ESC as ^[, a line break in a path as ^J);
--json keeps the data as it is."""
from __future__ import annotations

import json

from fleet.errors import UsageError
from tests.conftest import run_fleet

OSC52 = "\x1b]52;c;cHduZWQ=\x07"


def _no_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, repr(text)


def test_snapshot_show_and_diff_show_hostile_file_names(tmp_path, fleet_home):
    tree = tmp_path / "data"
    tree.mkdir()
    (tree / f"clip{OSC52}board").write_text("1")
    (tree / "forged\n  644  1 B  000000000000  fake").write_text("2")
    assert run_fleet(["snapshot", "create", str(tree), "--name", "before"], cwd=tmp_path).returncode == 0
    (tree / f"clip{OSC52}board").write_text("changed")
    (tree / f"new{OSC52}").write_text("3")
    assert run_fleet(["snapshot", "create", str(tree), "--name", "after"], cwd=tmp_path).returncode == 0

    show = run_fleet(["snapshot", "show", "before"], cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    _no_controls(show.stdout)
    assert "clip^[]52;c;cHduZWQ=^Gboard" in show.stdout
    entries = [line for line in show.stdout.splitlines() if line.startswith("  ")]
    assert len(entries) == 2 and any(line.endswith("forged^J  644  1 B  000000000000  fake") for line in entries)

    diff = run_fleet(["snapshot", "diff", "before", "after"], cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr
    _no_controls(diff.stdout)
    assert sorted(diff.stdout.splitlines()) == ["+ new^[]52;c;cHduZWQ=^G", "M clip^[]52;c;cHduZWQ=^Gboard"]

    as_json = json.loads(run_fleet(["snapshot", "show", "before", "--json"], cwd=tmp_path).stdout)
    assert f"clip{OSC52}board" in [e["path"] for e in as_json["entries"]]


def test_run_records_of_others_are_shown_not_obeyed(tmp_path, fleet_home):
    from fleet.records.chain import RunRecord, append_record
    from fleet.state import open_state
    state = open_state()
    try:
        append_record(RunRecord(run_id="r-evil", command=f"echo {OSC52} \x1b[2J", project="p", user="eve\x1b]0;x\x07",
                                data_snapshots={f"train{OSC52}": "a" * 64}), state.db)
        append_record(RunRecord(run_id="r-plain", command="echo ok", project="p", user="bob",
                                data_snapshots={"train": "b" * 64}), state.db)
    finally:
        state.close()
    for args in (["runs", "show", "r-evil"], ["audit", "r-evil"], ["runs", "diff", "r-evil", "r-plain"],
                 ["runs", "diff", "r-evil", "r-plain", "--md"], ["runs", "compare", "r-evil", "r-plain"],
                 ["runs", "compare", "r-evil", "r-plain", "--format", "md"]):
        proc = run_fleet(args, cwd=tmp_path)
        # audit fails (5) on the records' snapshots, never stored here, after showing the record
        assert proc.returncode == (5 if args[0] == "audit" else 0), (args, proc.stderr)
        _no_controls(proc.stdout)
        _no_controls(proc.stderr)
        shown = proc.stdout.replace("\\[", "[").replace("\\]", "]")   # Markdown shows \[ as [
        assert "^[]52;c;cHduZWQ=^G" in shown, args
    raw = json.loads(run_fleet(["runs", "show", "r-evil", "--json"], cwd=tmp_path).stdout)
    assert raw["command"] == f"echo {OSC52} \x1b[2J"


def test_an_error_quoting_a_hostile_value_is_one_visible_line(capsys):
    from fleet.cli.guard import guard

    def fail() -> int:
        raise UsageError(f"host h{OSC52}: no SSH private key", hint="set key\n\x1b[2J in [[hosts]]")

    assert guard(fail, debug=False) == 2
    err = capsys.readouterr().err
    _no_controls(err)
    assert err.count("\n") == 1 and err.startswith("fleet: error: host h^[]52;c;cHduZWQ=^G: no SSH private key")

    def bug() -> int:
        raise ValueError(f"bad\n{OSC52}")

    assert guard(bug, debug=False) == 1
    err = capsys.readouterr().err
    _no_controls(err)
    assert err.count("\n") == 1 and "internal error: ValueError: bad^J^[]52;" in err


def test_progress_lines_and_warnings_show_control_characters(capsys):
    """`fleet up`'s own lines (phases, warnings) quote lease reasons, host answers and names; the
    experiment's log lines are its own output and pass unchanged (colours, progress bars)."""
    from fleet.cli.render import RichEvents
    events = RichEvents(plain=True)
    events.phase("queue", f"waiting: {OSC52}")
    events.progress("stage", "a\nb")
    events.warn(f"host says {OSC52}")
    events.log("0", "out", "\x1b[32mgreen\x1b[0m")
    events.close()
    out, err = capsys.readouterr()
    _no_controls(err)
    assert err.splitlines() == ["fleet: queue: waiting: ^[]52;c;cHduZWQ=^G", "fleet: stage: a^Jb",
                                "fleet: warning: host says ^[]52;c;cHduZWQ=^G"]
    assert out == "[0] \x1b[32mgreen\x1b[0m\n"


def test_a_usage_error_quoting_an_argument_shows_its_control_characters(tmp_path, fleet_home):
    """click's own errors ("Got unexpected extra argument (…)") quoted the argument raw."""
    proc = run_fleet(["queue", "--json", f"x{OSC52}"], cwd=tmp_path)
    assert proc.returncode == 2
    _no_controls(proc.stderr)
    assert proc.stderr.strip().splitlines() == [
        "fleet: error: Got unexpected extra argument (x^[]52;c;cHduZWQ=^G) (see `fleet queue --help`)"]
