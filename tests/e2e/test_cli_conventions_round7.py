"""CLI conventions (red-team round 7): bad input gets one `fleet: error:` line and exit 2, never an
internal error; `--json` leaves nothing but JSON on stdout; a fleet.toml that is there but cannot be
read is refused, never taken for "no fleet.toml"."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet

HUGE = "9" * 5000   # past int()'s 4300-digit limit: `ValueError: Exceeds the limit` was an internal error


def one_error_line(proc, code: int = 2) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("fleet: error:"), proc.stderr
    assert "internal error" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("args", [["up", "--dry-run", "--gpus", HUGE], ["up", "--dry-run", "--gpus", f"A100:{HUGE}"],
                                  ["offers", "-p", "local", "--gpus", HUGE],
                                  ["offers", "-p", "local", "--gpus", f"-{HUGE}"]],
                         ids=["up", "up-typed", "offers", "offers-negative"])
def test_a_gpu_count_of_thousands_of_digits_is_refused_in_one_line(experiment, fleet_home, args):
    line = one_error_line(run_fleet(args, cwd=experiment, timeout=60))
    assert "--gpus" in line and "5000-digit" in line, line


@pytest.mark.parametrize("toml", [f"gpus = {HUGE}\n", f"[budgets]\nproject_monthly = {HUGE}\n",
                                  f"[sweep]\nparams = {{ lr = [{HUGE}] }}\n"], ids=["gpus", "budgets", "sweep"])
def test_a_fleet_toml_integer_of_thousands_of_digits_is_invalid_toml(experiment, fleet_home, toml):
    text = 'project = "t"\ncommand = "true"\n' + toml
    (experiment / "fleet.toml").write_text(text)
    where = f"fleet.toml:{text.count(chr(10), 0, text.index(HUGE)) + 1}: invalid TOML"
    for args in (["up", "--dry-run"], ["budget"]):
        line = one_error_line(run_fleet(args, cwd=experiment, timeout=60))
        assert where in line and "4300 digits" in line, (args, line)


def test_a_data_path_in_a_symlink_loop_is_refused_in_one_line(experiment, fleet_home):
    (experiment / "loop").symlink_to("loop")
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\n[data]\ntrain = "loop"\n')
    line = one_error_line(run_fleet(["up", "--dry-run"], cwd=experiment, timeout=60))
    assert "[data] train" in line and "loop" in line, line


@pytest.mark.parametrize("kind", ["dangling", "loop", "directory"])
def test_a_fleet_toml_that_cannot_be_read_is_not_taken_for_none(experiment, fleet_home, kind):
    """A team's fleet.toml linked from an unmounted share: `fleet up -- CMD` ran with no budgets and
    `fleet budget` said none were set."""
    config = experiment / "fleet.toml"
    config.unlink()
    if kind == "dangling":
        config.symlink_to("/nonexistent-share/team/fleet.toml")
    elif kind == "loop":
        config.symlink_to("fleet.toml")
    else:
        config.mkdir()
    for args in (["up", "--dry-run", "--", "echo", "hi"], ["up", "--dry-run"], ["budget"], ["budget", "--json"]):
        proc = run_fleet(args, cwd=experiment, timeout=60)
        line = one_error_line(proc)
        assert line.startswith("fleet: error: fleet.toml:"), (args, line)
        assert proc.stdout == "", (args, proc.stdout)
    if kind == "dangling":
        assert "/nonexistent-share/team/fleet.toml" in line


def test_runs_ls_json_leaves_no_partial_json_when_the_state_cannot_be_read(tmp_path, fleet_home):
    (fleet_home / "state.db").write_bytes(b"not a database" * 1000)
    proc = run_fleet(["runs", "ls", "--json"], cwd=tmp_path, timeout=60)
    line = one_error_line(proc, code=3)
    assert "corrupt" in line, line
    assert proc.stdout == "", proc.stdout   # was `{"runs": [` above the error line


def test_runs_ls_json_still_lists_when_there_is_nothing(tmp_path, fleet_home):
    proc = run_fleet(["runs", "ls", "--json"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"runs": []}, proc


@pytest.mark.parametrize("args", [["up", "--dry-run", "--budget", HUGE], ["extend", "l-none", HUGE + "m"]],
                         ids=["budget", "extend"])
def test_a_refusal_quoting_a_huge_value_stays_a_readable_line(experiment, fleet_home, args):
    """The refusal names the option and its limit first; the 5,000-character value it quotes is cut
    in the middle, not printed whole."""
    line = one_error_line(run_fleet(args, cwd=experiment, timeout=60))
    assert len(line) <= 1300 and "characters left out" in line, len(line)
    assert ("--budget: must be at most" in line) if args[0] == "up" else (HUGE[:100] in line), line[:200]


def test_report_refuses_json_with_another_format_rather_than_guess(experiment, fleet_home):
    line = one_error_line(run_fleet(["report", "--format", "csv", "--json"], cwd=experiment, timeout=60))
    assert "--json and --format csv" in line, line
    same = run_fleet(["report", "--format", "json", "--json"], cwd=experiment, timeout=60)
    assert same.returncode == 0 and json.loads(same.stdout)["by"] == "project", same.stderr


def test_a_gpu_count_with_thousands_of_leading_zeros_is_read_as_its_value(experiment, fleet_home):
    proc = run_fleet(["offers", "-p", "local", "--gpus", "0" * 4400 + "1", "--json"], cwd=experiment, timeout=60)
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    json.loads(proc.stdout)


def test_report_json_with_format_json_in_capitals_is_one_format(experiment, fleet_home):
    same = run_fleet(["report", "--format", "JSON", "--json"], cwd=experiment, timeout=60)
    assert same.returncode == 0 and json.loads(same.stdout)["by"] == "project", same.stderr


def test_a_first_item_that_cannot_be_written_leaves_no_json_start():
    from fleet.render.data import json_list_chunks
    out = []
    with pytest.raises(TypeError):     # a record holding what JSON cannot say
        for piece in json_list_chunks("runs", [{"meta": object()}]):
            out.append(piece)
    assert out == []


@pytest.mark.parametrize("args", [["extend", "l-none", "1h"], ["offers", "-p", "local", "--gpus", "1"],
                                  ["hosts", "ls"], ["report", "--format", "html", "-o", "r.html"]],
                         ids=["extend", "offers", "hosts", "report-html"])
def test_every_command_that_reads_fleet_toml_refuses_one_it_cannot_read(experiment, fleet_home, args):
    """extend (budgets cap a kept lease's extension), offers and reap ([aws], [prices]), hosts
    ([[hosts]]) and the HTML report (budgets) went on as if there were no fleet.toml."""
    config = experiment / "fleet.toml"
    config.unlink()
    config.symlink_to("/nonexistent-share/team/fleet.toml")
    proc = run_fleet(args, cwd=experiment, timeout=60)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("fleet: error: fleet.toml:"), (proc.returncode, proc.stderr)
    assert "/nonexistent-share/team/fleet.toml" in last and "internal error" not in proc.stderr
