"""The public API (fleet/__init__.py) with arguments of the wrong type: one UsageError naming the
argument, never a raw TypeError/AttributeError from deep inside, and never a value read as something
else (`fleet.down("l-abc")` iterated the string and tried to release lease "l")."""
from __future__ import annotations

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
])
def test_a_wrong_type_is_one_usage_error_naming_the_argument(call, named, fleet_home):
    with pytest.raises(UsageError, match=f"^{named}".replace("[", r"\[").replace("]", r"\]")):
        call()


def test_argv_for_run_on_lease_is_quoted_as_the_cli_quotes_it():
    from fleet.arguments import command_arg
    assert command_arg(["echo", "a b"]) == "echo 'a b'" and command_arg(["make train"]) == "make train"
