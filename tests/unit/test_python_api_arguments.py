"""The public API (fleet/__init__.py) with arguments of the wrong type: one UsageError naming the
argument, never a raw TypeError/AttributeError from deep inside, and never a value read as something
else (`fleet.down("l-abc")` iterated the string and tried to release lease "l")."""
from __future__ import annotations

import re

import pytest

import fleet
from fleet.errors import UsageError


@pytest.mark.parametrize("call, named", [
    (lambda: fleet.down("l-abc"), "lease_ids must be a list of ids"),
    (lambda: fleet.down([1]), "lease_ids[0] must be a non-empty string"),
    (lambda: fleet.extend(None, 10), "lease_id must be a non-empty string"),
    (lambda: list(fleet.follow_logs(None)), "run_id must be a non-empty string"),
    (lambda: fleet.get_provider(None), "name must be a non-empty string"),
    (lambda: fleet.load_config(5), "path and cwd must be a path"),
    (lambda: fleet.run_on_lease("l-abc", 5), "command must be a non-empty string"),
    (lambda: fleet.run_on_lease(None, "true"), "lease_id must be a non-empty string"),
    # `state` comes first in status/down/extend: a user's name there read as the state store
    (lambda: fleet.status("bob"), "state must be a fleet StateStore"),
    (lambda: fleet.down(["l-abc"], state="x"), "state must be a fleet StateStore"),
    (lambda: fleet.extend("l-abc", 60, 5), "state must be a fleet StateStore"),
    # a user that is no one's name listed (or released) nothing, silently
    (lambda: fleet.status(user=5), "user must be a non-empty string"),
    (lambda: fleet.status(user=""), "user must be a non-empty string"),
    (lambda: fleet.down([], all_leases=True, user=5), "user must be a non-empty string"),
    (lambda: fleet.extend("l-abc", 60, user=5), "user must be a non-empty string"),
    (lambda: fleet.open_state(5), "url must be a state database URL"),
    (lambda: fleet.extend("l-abc", 60, limits=5), "limits must be a BudgetLimits or None"),
    (lambda: fleet.run_on_lease("l-abc", "true", config=5), "config must be a fleet Config"),
    (lambda: fleet.run_on_lease("l-abc", "true", observers=None), "observers must be a list of RunObserver"),
    (lambda: fleet.run_on_lease("l-abc", "true", state="x"), "state must be a fleet StateStore"),
    (lambda: list(fleet.follow_logs("r-abc", follow="no")), "follow must be True or False"),
    (lambda: list(fleet.follow_logs("r-abc", state=5)), "state must be a fleet StateStore"),
    (lambda: fleet.RunOptions(allow_dirty="no"), "allow_dirty must be True or False"),
    (lambda: fleet.RunOptions(ci="no"), "ci must be True or False"),
    (lambda: fleet.load_config(overrides="gpus=8"), "overrides must be a dict of settings"),
    (lambda: fleet.load_config(overrides={1: 2, "command": "true"}), "overrides: a setting's name must be a string"),
    (lambda: fleet.load_config(overrides={"env": ["A=1"], "command": "true"}), "overrides['env'] must be a dict"),
    (lambda: fleet.load_config(overrides={"env": {"A": 5}, "command": "true"}), "overrides['env'] must be a dict"),
    (lambda: fleet.load_config(overrides={"env": {"A=B": "c"}, "command": "true"}), "overrides['env']: 'A=B' is not"),
])
def test_a_wrong_type_is_one_usage_error_naming_the_argument(call, named, fleet_home):
    with pytest.raises(UsageError, match="^" + re.escape(named)):
        call()


def test_an_env_value_of_the_wrong_type_is_not_shown(fleet_home):
    with pytest.raises(UsageError) as refused:     # an env value may be a secret
        fleet.load_config(overrides={"env": {"TOKEN": b"s3cret"}, "command": "true"})
    assert "s3cret" not in str(refused.value)


def test_argv_for_run_on_lease_is_quoted_as_the_cli_quotes_it():
    from fleet.arguments import command_arg
    assert command_arg(["echo", "a b"]) == "echo 'a b'" and command_arg(["make train"]) == "make train"


def test_follow_logs_refuses_a_wrong_argument_or_unknown_run_when_called_not_when_read(fleet_home):
    """It was a generator: `lines = fleet.follow_logs(None)` succeeded and failed later, wherever the
    caller first read a line."""
    from fleet.errors import NotFound
    with pytest.raises(UsageError, match="^run_id must be a non-empty string"):
        fleet.follow_logs(None)
    with pytest.raises(NotFound, match="no run 'r-nope'"):
        fleet.follow_logs("r-nope")
