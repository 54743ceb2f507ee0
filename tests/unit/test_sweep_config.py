"""`[sweep]` in fleet.toml: parsed once with the other tables; flags override it (fleet/cli/sweep.py)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from fleet.cli.sweep import build_spec
from fleet.config.loader import load_config
from fleet.errors import FleetError

BASE = 'project = "p"\ncommand = "python train.py"\ntemplate = "local-1gpu"\n'


def _load(tmp_path, text: str):
    (tmp_path / "fleet.toml").write_text(BASE + text)
    return load_config(cwd=tmp_path)


def test_the_table_is_read_and_flags_override_it(tmp_path):
    config = _load(tmp_path, '[sweep]\ncommand = "python train.py --lr {lr} --hidden {hidden}"\n'
                             'params = { lr = [0.01, 0.05], hidden = [32, 64] }\nparallel = 2\n'
                             'trial_timeout = "5m"\nbudget = 3\n')
    table = config.sweep
    assert table.params == {"lr": ("0.01", "0.05"), "hidden": ("32", "64")}
    assert (table.parallel, table.trial_timeout_s, table.budget) == (2, 300, Decimal("3"))
    spec = build_spec(config, table, None, [], samples=None, seed=None, parallel=None, gpus_per_trial=None,
                      trial_timeout_s=None, budget=None)
    assert len(spec.trials) == 4 and spec.parallel == 2 and spec.budget == Decimal("3")
    assert spec.trials[0].command(spec.command) == "python train.py --lr 0.01 --hidden 32"
    spec = build_spec(config, table, ["echo", "{lr}"], ["lr=9"], samples=None, seed=None, parallel=1,
                      gpus_per_trial=None, trial_timeout_s=None, budget=None)
    assert [t.values for t in spec.trials] == [{"lr": "9", "hidden": "32"}, {"lr": "9", "hidden": "64"}]
    assert spec.parallel == 1 and spec.trial_command(spec.trials[0]) == "echo 9"


@pytest.mark.parametrize("bad, says", [
    ("params = 3", "must be a table of name = [values]"),
    ("params = { lr = [] }", "lr: expected a list"),
    ("params = { lr = [1, 1] }", "repeated"),
    ("parallel = 0", "sweep.parallel"),
    ("budget = -1", "sweep.budget"),
    ("nope = 1", "nope"),
])
def test_bad_values_name_the_key(tmp_path, bad, says):
    with pytest.raises(FleetError, match=r"(?s)" + says.replace("[", r"\[").replace("]", r"\]")):
        _load(tmp_path, f"[sweep]\n{bad}\n")


@pytest.mark.parametrize("gpus", [65537, 10 ** 23])
def test_gpus_per_trial_is_bounded_before_anything_is_leased(tmp_path, gpus):
    """`--gpus-per-trial 99999999999999999999999` got as far as sizing the pool, through a float:
    "99999999999999991611392 GPUs on local-1gpu is 99999999999999991611392 machines"."""
    config = _load(tmp_path, '[sweep]\nparams = { lr = [1, 2] }\n')
    with pytest.raises(FleetError, match=f"--gpus-per-trial must be at most 65536, got {gpus}$"):
        build_spec(config, config.sweep, None, [], samples=None, seed=None, parallel=None, gpus_per_trial=gpus,
                   trial_timeout_s=None, budget=None)


def test_the_sweep_line_says_how_many_run_at_once(tmp_path, fleet_home):
    """`--parallel 99999999999999999999999` for 2 trials announced "2 trial(s), 99999999999999999999999 at once"."""
    from tests.conftest import run_fleet
    (tmp_path / "fleet.toml").write_text(BASE + 'provider = "local"\n')
    proc = run_fleet(["sweep", "--param", "lr=1,2", "--parallel", "99999999999999999999999", "--allow-dirty",
                      "--", "echo", "{lr}"], cwd=tmp_path, env={"FLEET_SSHD": str(tmp_path / "no-sshd")})
    assert proc.returncode == 3, proc.stderr          # no sshd: nothing runs, the plan line is all we need
    assert ": 2 trial(s), 2 at once" in proc.stderr, proc.stderr


def test_a_trial_whose_command_a_machine_cannot_take_is_refused_before_the_pool_is_leased(tmp_path):
    """The template fits fleet.toml's 100 KiB, but a long value, substituted twice, made the first
    trial's command too long: it failed on the leased pool ("Argument list too long"), paid for."""
    config = _load(tmp_path, '[sweep]\ncommand = "python train.py --a {v} --b {v}"\n'
                             f'params = {{ v = ["short", "{"x" * 60_000}"] }}\n')
    with pytest.raises(FleetError) as got:
        build_spec(config, config.sweep, None, [], samples=None, seed=None, parallel=None, gpus_per_trial=None,
                   trial_timeout_s=None, budget=None)
    assert got.value.one_line().startswith("t002's command is 120,0")
    assert "more than a machine takes as one command" in got.value.one_line()
    config = _load(tmp_path, f'[sweep]\nparams = {{ v = ["{"x" * 110_000}"] }}\n')
    with pytest.raises(FleetError) as got:
        build_spec(config, config.sweep, None, [], samples=None, seed=None, parallel=None, gpus_per_trial=None,
                   trial_timeout_s=None, budget=None)
    assert got.value.one_line().startswith("parameter v's value in t001 is 110,0")
