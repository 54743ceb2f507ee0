"""A ./fleet.toml that is a FIFO hung nearly every command that peeks at it (`fleet down --all`
among them), and one linked to /dev/zero filled memory at gigabytes a second (red-team finding):
it is read only as a regular file, without blocking, to a bound."""
from __future__ import annotations

import os

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_special_fleet_toml_neither_hangs_nor_floods(tmp_path, fleet_home, kind):
    target = tmp_path / "fleet.toml"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    for args in (["status"], ["runs", "ls"]):
        proc = run_fleet(args, cwd=tmp_path, timeout=30)
        assert proc.returncode == 0, (args, proc.stderr)
    # Releasing every lease of a state it cannot name is refused (it would be FLEET_HOME's, maybe not
    # the team's the file names), in one line and without hanging.
    refused = run_fleet(["down", "--all"], cwd=tmp_path, timeout=30)
    assert refused.returncode == 2 and "not a regular file" in refused.stderr \
        and "fleet down --all` would release" in refused.stderr, refused.stderr
    # `budget` reads the whole file for the budgets: one that is not a file is refused, never taken
    # for "no budgets set" (red-team round 7).
    refused = run_fleet(["budget"], cwd=tmp_path, timeout=30)
    assert refused.returncode == 2 and "fleet.toml: " in refused.stderr and "not a regular file" in refused.stderr, \
        refused.stderr
    assert ("(a FIFO)" if kind == "fifo" else "(a device)") in refused.stderr, refused.stderr   # what it is instead
    refused = run_fleet(["snapshot", "ls"], cwd=tmp_path, timeout=30)
    assert refused.returncode == 2 and "not a regular file" in refused.stderr, refused.stderr


def test_a_linked_fleet_toml_is_still_read(tmp_path, fleet_home):
    shared = tmp_path / "team" / "fleet.toml"
    shared.parent.mkdir()
    shared.write_text('user = "linked-user"\ncommand = "true"\n')
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "fleet.toml").symlink_to(shared)
    from fleet.config.peek import peek_str
    assert peek_str("user", tmp_path / "exp") == "linked-user"


@pytest.mark.parametrize("kind", ["dangling-link", "not-toml"])
def test_a_fleet_toml_that_cannot_be_read_is_said_by_the_commands_that_only_peek(tmp_path, fleet_home, kind):
    """`fleet status` beside a team's fleet.toml linked from an unmounted share (or mid-edit, not TOML)
    cannot know its state_url: it still answers from FLEET_HOME's state, but says so, never a silent
    "no live leases" about a database that is not the team's."""
    import json
    target = tmp_path / "fleet.toml"
    if kind == "dangling-link":
        target.symlink_to(tmp_path / "unmounted-share" / "fleet.toml")
    else:
        target.write_text('state_url = "postgresql://team-db/fleet\n')
    listing = run_fleet(["status", "--json"], cwd=tmp_path, timeout=30)
    assert listing.returncode == 0 and json.loads(listing.stdout) == {"leases": []}, listing
    warning = [line for line in listing.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "./fleet.toml: " in warning[0] and "state_url it sets is ignored" in warning[0], \
        listing.stderr
    assert ("cannot be read" if kind == "dangling-link" else "not valid TOML") in warning[0]
    plain = run_fleet(["status"], cwd=tmp_path, timeout=30)
    assert plain.returncode == 0 and "no live leases" in plain.stdout and "state_url it sets is ignored" in plain.stderr
    # Releasing every lease is refused: it would be FLEET_HOME's leases, not the team's the file names.
    down = run_fleet(["down", "--all"], cwd=tmp_path, timeout=30)
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1 and down.stdout == "", down
    assert "./fleet.toml: " in down.stderr and "fleet down LEASE" in down.stderr, down.stderr


def test_the_snapshot_commands_refuse_a_fleet_toml_linked_from_an_unmounted_share(tmp_path, fleet_home):
    """The store the snapshot commands act on is fleet.toml's: a link to an unmounted team share was
    taken for no fleet.toml, so `snapshot ls` said "no snapshots" and `snapshot gc`/`rm` went to the
    default store, as store_url's own rule forbids."""
    (tmp_path / "fleet.toml").symlink_to(tmp_path / "unmounted-share" / "fleet.toml")
    for args in (["snapshot", "ls"], ["snapshot", "gc", "--dry-run"]):
        refused = run_fleet(args, cwd=tmp_path, timeout=30)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, (args, refused)
        assert "fleet.toml: a symbolic link to " in refused.stderr and "cannot be read" in refused.stderr, refused.stderr
        assert "--store" in refused.stderr and refused.stdout == "", refused
