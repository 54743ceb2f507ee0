from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.sweep.params import merged, params_from_table, parse_param, plan_trials


def test_grid_is_every_combination_in_order():
    trials = plan_trials([parse_param("lr=1e-3,3e-4"), parse_param("batch=32,64")])
    assert [t.values for t in trials] == [{"lr": "1e-3", "batch": "32"}, {"lr": "1e-3", "batch": "64"},
                                          {"lr": "3e-4", "batch": "32"}, {"lr": "3e-4", "batch": "64"}]
    assert [t.name for t in trials] == ["t001", "t002", "t003", "t004"]


def test_random_search_is_seeded_and_without_repeats():
    params = [parse_param("a=1,2,3,4"), parse_param("b=x,y,z")]
    one = plan_trials(params, samples=5, seed=7)
    assert [t.values for t in one] == [t.values for t in plan_trials(params, samples=5, seed=7)]
    assert len({tuple(t.params) for t in one}) == 5
    assert [t.values for t in one] != [t.values for t in plan_trials(params, samples=5, seed=8)]


def test_values_reach_the_command_quoted_and_the_environment():
    [trial] = plan_trials([parse_param("name=a b")])
    assert trial.command("echo {name} {{literal}}") == "echo 'a b' {literal}"
    assert trial.command_argv(("echo", "--name={name}", "{{x}}")) == "echo '--name=a b' '{x}'"
    assert trial.env() == {"FLEET_PARAM_NAME": "a b"}
    with pytest.raises(UsageError, match="{other}"):
        trial.command("echo {other}")


@pytest.mark.parametrize("bad", ["lr", "=1", "lr=", "lr=1,,2", "lr=1,1", "1x=2"])
def test_bad_params_are_usage_errors(bad):
    with pytest.raises(UsageError):
        parse_param(bad)


def test_flags_replace_config_params_of_the_same_name():
    table = params_from_table({"lr": [0.1, 0.01], "hidden": [32]})
    out = merged(table, [parse_param("lr=5")])
    assert [(p.name, p.values) for p in out] == [("lr", ("5",)), ("hidden", ("32",))]


def test_stop_rules_parse_and_wait_for_their_counter():
    from fleet.sweep.stopping import StopRule
    rule = StopRule.parse("val_loss > 2.0 after 3 epochs")
    assert rule.verdict({"val_loss": 2.5, "epoch": 2}) is None
    assert rule.verdict({"val_loss": 2.5, "epochs": 3}).startswith("early stop: val_loss 2.5 > 2 at epoch 3")
    assert rule.verdict({"val_loss": 1.5, "epoch": 9}) is None
    assert rule.verdict({"epoch": 9}) is None and rule.verdict({"val_loss": "x", "epoch": 9}) is None
    assert StopRule.parse("acc<=0.2").verdict({"acc": 0.1}) is not None
    for bad in ("", "loss", "loss >> 2", "loss > x", "loss > 2 after epochs"):
        with pytest.raises(UsageError):
            StopRule.parse(bad)


@pytest.mark.parametrize("template", [
    'printf %s {v}', 'printf %s "{v}"', "printf %s '{v}'", 'printf %s "pre {v} post"', "printf %s x{v}y",
    'printf %s "$HOME"{v}', "printf %s \"it's {v}\"",
])
@pytest.mark.parametrize("value", ["$(touch PWNED)", "`touch PWNED`", "a b", "it's", 'say "hi"', "back\\slash", "$HOME"])
def test_a_value_reaches_the_program_as_written_wherever_the_placeholder_stands(tmp_path, template, value):
    # A placeholder inside the template's own quotes ("--name={v}" in double quotes is natural) got
    # shlex.quote's single quotes inside double quotes: a value ran as a command, 'a b' arrived quoted.
    import subprocess
    [trial] = plan_trials([parse_param(f"v={value}")])
    line = trial.command(template)
    got = subprocess.run(["sh", "-c", line], cwd=tmp_path, capture_output=True, text=True, env={"HOME": "/h"})
    expected = subprocess.run(["sh", "-c", template.replace("{v}", "VALUE")], capture_output=True, text=True,
                              env={"HOME": "/h"}).stdout.replace("VALUE", value)
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected
    assert not (tmp_path / "PWNED").exists()


def test_parameter_names_that_differ_only_in_case_are_refused():
    # Both reach the trial as FLEET_PARAM_LR: the second silently replaced the first's value.
    with pytest.raises(UsageError, match="FLEET_PARAM_LR"):
        plan_trials([parse_param("lr=1"), parse_param("LR=2")])


def test_a_nul_in_a_value_is_refused_before_anything_is_leased():
    # It reached the trial's environment: the trial failed, or was reported as a lost connection.
    with pytest.raises(UsageError, match="NUL"):
        plan_trials([parse_param("x=a\x00b,c")])


def test_a_value_is_substituted_once_and_never_rescanned():
    [trial] = plan_trials([parse_param("x=a\x01b}}{x}")])
    assert trial.command_argv(("echo", "{x}", "{{x}}")) == "echo 'a\x01b}}{x}' '{x}'"


def test_random_search_over_a_space_too_large_for_a_range_draws_its_samples():
    """The grid's own refusal says "use --samples N", and 20 parameters of 10 values each then
    stopped with an internal error (OverflowError: random.sample over a range past sys.maxsize)."""
    params = [parse_param(f"p{i}=" + ",".join(map(str, range(10)))) for i in range(20)]
    trials = plan_trials(params, samples=50, seed=3)
    assert len(trials) == 50 and len({t.params for t in trials}) == 50
    assert [t.values for t in trials] == [t.values for t in plan_trials(params, samples=50, seed=3)]
    assert all(set(t.values) == {f"p{i}" for i in range(20)} for t in trials)
