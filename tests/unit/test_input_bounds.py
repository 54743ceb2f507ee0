"""Every count and duration a user writes is bounded up front, and every string that reaches a process
is free of NUL: one line naming the key (or flag) and what is allowed, exit 2, nothing started.

Before these bounds, `gpus = 99999999999999999999` started thousands of sshds, `--max-duration
99999999999999h` ended in "internal error: OverflowError" and a NUL in `[env]` became a Python
traceback on the machine.
"""
from __future__ import annotations

import pytest

from tests.conftest import processes_under, run_fleet

HUGE = "99999999999999999999"
BASE = 'project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'


@pytest.fixture
def no_sshd(fleet_home, tmp_path):
    """No sshd can start: a check that comes too late shows as exit 3 ("sshd not found"), not a fleet of sshds."""
    return {"FLEET_SSHD": str(tmp_path / "no-sshd")}


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("fleet: error:")]


def assert_refused(proc, *needles: str, home=None) -> str:
    lines = error_lines(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "internal error" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    if home is not None:
        machines = home / "machines"
        assert not machines.exists() or not any(machines.iterdir()), list(machines.iterdir())
        assert not processes_under(home)
    return lines[0]


@pytest.mark.parametrize("toml, needles", [
    (f"gpus = {HUGE}\n", ("fleet.toml:4: gpus:", "at most 65536 GPUs", HUGE)),
    ('max_duration = "99999999999999h"\n', ("fleet.toml:4: max_duration:", "at most 365d")),
    ("max_duration = 1" + "0" * 400 + "\n", ("fleet.toml:4: max_duration:", "at most 365d")),
    ('[lease]\nheartbeat_ttl = "2d"\n', ("fleet.toml:5: lease.heartbeat_ttl:", "at most 1d")),
    ('[budgets]\ngrace = "400d"\n', ("fleet.toml:5: budgets.grace:", "at most 1d")),
    ("[budgets]\nidle_minutes = 1e300\n", ("fleet.toml:5: budgets.idle_minutes:", "at most 525600")),
    ('[[hosts]]\naddress = "127.0.0.1"\ngpus = 100000\n', ("fleet.toml:6: hosts[0].gpus:", "at most 1024")),
])
def test_fleet_toml_counts_and_durations_are_bounded(experiment, no_sshd, fleet_home, toml, needles):
    (experiment / "fleet.toml").write_text(BASE + toml)
    assert_refused(run_fleet(["up"], cwd=experiment, env=no_sshd), *needles, home=fleet_home)


@pytest.mark.parametrize("args, needles", [
    (["--gpus", HUGE], ("--gpus: must be at most 65536 GPUs",)),
    (["--max-duration", "99999999999999h"], ("--max-duration: must be at most 365d", "99999999999999h")),
    (["--keep", "99999999999999h"], ("--keep: must be at most 365d",)),
    (["--keep", "soon"], ("--keep: must be a duration",)),
])
def test_up_flags_are_bounded(experiment, no_sshd, fleet_home, args, needles):
    assert_refused(run_fleet(["up", *args], cwd=experiment, env=no_sshd), *needles, home=fleet_home)


@pytest.mark.parametrize("args, needles", [
    (["--dry-run", "--wait", "nan"], ("--wait: must be a duration", "'nan'")),
    (["--dry-run", "--wait", "-1m"], ("--wait: must be a duration",)),
    (["--dry-run", "--keep", "99999999999999h"], ("--keep: must be at most 365d",)),
    (["--dry-run", "--exit-code-from", "x"], ("--exit-code-from 'x': a rank is a number",)),
    (["--exit-code-from", "-1"], ("--exit-code-from '-1': a rank is a number",)),
    (["--exit-code-from", "1.0"], ("--exit-code-from '1.0': a rank is a number",)),
])
def test_every_up_flag_is_read_before_leasing_and_by_a_dry_run(experiment, no_sshd, fleet_home, args, needles):
    """`fleet up --dry-run --wait nan` said all was well (the dry run returned before --keep and --wait
    were read) and `--exit-code-from x` was only noticed, as a warning, after the whole run."""
    assert_refused(run_fleet(["up", *args], cwd=experiment, env=no_sshd), *needles, home=fleet_home)


@pytest.mark.parametrize("data, code, needle", [
    ('d = "/nonexistent-fleet-data"', 2, "[data] d = '/nonexistent-fleet-data': no such file or directory"),
    ('d = "snapshot:nope"', 4, "no snapshot named or prefixed 'nope'"),
])
def test_a_dry_run_refuses_data_the_run_would_refuse(experiment, no_sshd, fleet_home, data, code, needle):
    """`[data] d = "/nonexistent"` passed `fleet up --dry-run` (exit 0) and failed the real run."""
    (experiment / "fleet.toml").write_text(BASE + f"[data]\n{data}\n")
    proc = run_fleet(["up", "--dry-run"], cwd=experiment, env=no_sshd)
    assert proc.returncode == code and len(error_lines(proc)) == 1 and needle in error_lines(proc)[0], proc.stderr


@pytest.mark.parametrize("command", ["", " "])
def test_an_empty_command_after_the_dashes_is_named_as_such(experiment, no_sshd, fleet_home, command):
    """`fleet up -- ""` said "--command: must be a non-empty string": there is no --command flag."""
    line = assert_refused(run_fleet(["up", "--", command], cwd=experiment, env=no_sshd), home=fleet_home)
    assert line == f"fleet: error: the command after --: must be a non-empty string, got {command!r}"


@pytest.mark.parametrize("keep, needle", [("nan", "--keep: must be a duration"), ("99999999999999h", "--keep: must be at most 365d")])
def test_rerun_keep_names_its_flag(experiment, fleet_home, keep, needle):
    """`fleet rerun RUN --keep nan` said only "must be a duration …", naming nothing."""
    assert_refused(run_fleet(["rerun", "r-nope", "--keep", keep], cwd=experiment), needle, home=fleet_home)


def test_heartbeat_ttl_from_the_environment_is_bounded(experiment, no_sshd, fleet_home):
    proc = run_fleet(["up"], cwd=experiment, env={**no_sshd, "FLEET_HEARTBEAT_TTL": "99999999999999h"})
    assert_refused(proc, "FLEET_HEARTBEAT_TTL: must be at most 1d", home=fleet_home)


def test_extend_duration_is_bounded(experiment, fleet_home):
    assert_refused(run_fleet(["extend", "l-deadbeef", "99999999999999h"], cwd=experiment),
                   "must be at most 365d")


def test_local_machines_per_lease_are_capped_before_anything_is_recorded(experiment, no_sshd, fleet_home):
    line = assert_refused(run_fleet(["up", "--gpus", "65"], cwd=experiment, env=no_sshd),
                          "65 machines", "local provider leases at most 64 machines", home=fleet_home)
    assert "fewer GPUs" in line
    # A template with more GPUs per machine fits the same cap.
    status = run_fleet(["status", "--json"], cwd=experiment)
    assert status.returncode == 0 and '"leases": []' in status.stdout, status.stdout


def test_ssh_machines_per_lease_are_capped_by_the_inventory(experiment, no_sshd, fleet_home):
    """Two declared GPUs: three one-GPU machines can never be placed, so they are refused before
    any host is probed or any slot reserved (nothing listens on 127.0.0.1:9)."""
    (experiment / "fleet.toml").write_text(
        'command = "true"\nprovider = "ssh"\ntemplate = "hosts-1gpu"\n'
        '[[hosts]]\naddress = "127.0.0.1"\nport = 9\ngpus = 2\n')
    line = assert_refused(run_fleet(["up", "--gpus", "3"], cwd=experiment, env=no_sshd),
                          "ssh provider leases at most 2 machines")
    assert "fleet hosts add" in line


def test_every_provider_declares_its_cap():
    from fleet.providers.aws.provider import AWSProvider
    from fleet.providers.local import LocalProvider
    from fleet.providers.ssh import SSHHostsProvider
    assert LocalProvider.max_machines_per_lease == 64
    assert AWSProvider.max_machines_per_lease == 256
    assert isinstance(SSHHostsProvider.__dict__["max_machines_per_lease"], property)


@pytest.mark.parametrize("toml, key", [
    ('[env]\nA = "x\\u0000y"\n', "fleet.toml:5: env.A:"),
    ('setup = "pip install\\u0000x"\n', "fleet.toml:4: setup:"),
    ('[aws]\nstack = "us\\u0000"\n', "fleet.toml:5: aws.stack:"),
])
def test_nul_in_strings_is_refused_naming_the_key(experiment, no_sshd, fleet_home, toml, key):
    (experiment / "fleet.toml").write_text(BASE + toml)
    assert_refused(run_fleet(["up"], cwd=experiment, env=no_sshd), key, "NUL", home=fleet_home)


def test_nul_in_command_is_refused(experiment, no_sshd, fleet_home):
    (experiment / "fleet.toml").write_text('project = "t"\ntemplate = "local-1gpu"\ncommand = "echo a\\u0000b"\n')
    assert_refused(run_fleet(["up"], cwd=experiment, env=no_sshd), "fleet.toml:3: command:", "NUL",
                   home=fleet_home)


def test_bounds_in_the_library_too():
    """fleet.config.loader.load_config (the library entry) applies the same bounds to overrides."""
    from fleet.config.values import MAX_DURATION_S, parse_duration
    from fleet.errors import UsageError
    assert parse_duration("365d") == MAX_DURATION_S
    for bad in ("366d", 10**30, "9" * 400 + "d"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_a_dry_run_with_data_writes_no_store(experiment, no_sshd, fleet_home, tmp_path):
    (experiment / "data").mkdir()
    store = tmp_path / "not-made-yet"
    (experiment / "fleet.toml").write_text(BASE + f'store = "{store}"\n[data]\nd = "data"\n')
    proc = run_fleet(["up", "--dry-run"], cwd=experiment, env=no_sshd)
    assert proc.returncode == 0, proc.stderr
    assert not store.exists()


def test_a_command_longer_than_a_machine_takes_is_refused_before_anything_is_leased(experiment, no_sshd, fleet_home):
    """Red-team finding: a 200 KB command was leased for, then failed on the machine ("Argument list
    too long"); past 256 KB it read as a lost connection, "run it again"."""
    (experiment / "fleet.toml").write_text(BASE.replace('"true"', '": ' + "x" * 200_000 + '"'))
    assert_refused(run_fleet(["up"], cwd=experiment, env=no_sshd), "fleet.toml: command: 200,002 bytes",
                   "at most 100 KiB", home=fleet_home)


def test_a_long_command_from_the_python_api_is_refused_too(fleet_home):
    import fleet
    from fleet.errors import FleetError
    for call in (lambda: fleet.load_config(overrides={"command": "x" * 200_000}),
                 lambda: fleet.run_on_lease("l-abc", ["echo", "x" * 200_000])):
        with pytest.raises(FleetError, match="^command: 2"):
            call()
