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
