"""A snapshot name made only of hex digits reads as an id prefix: in a shared store someone's name
`1f3a` would redirect a teammate's `snapshot:1f3a` (or `fleet snapshot show 1f3a`) to a snapshot
of their choosing. Such names are refused when given, and a ref file of that shape planted in the
store by hand never shadows the ids it prefixes."""
from __future__ import annotations

import json

from tests.conftest import run_fleet


def _create(tmp_path, name: str, *extra: str):
    d = tmp_path / name
    d.mkdir()
    (d / "x").write_text(name)
    return run_fleet(["snapshot", "create", str(d), "--store", str(tmp_path / "store"), "--json", *extra], cwd=tmp_path)


def test_hex_only_names_are_refused_and_others_pass(tmp_path, fleet_home):
    for name in ("beef", "1f3a", "0123456789"):
        done = _create(tmp_path, f"d-{name}", "--name", name)
        assert done.returncode == 2 and f"invalid snapshot name '{name}'" in done.stderr, done.stderr
    assert _create(tmp_path, "d-ok", "--name", "beefy").returncode == 0
    assert _create(tmp_path, "d-abc", "--name", "abc").returncode == 0   # 3 characters: not read as a prefix


def test_env_names_are_fleets_own_and_refused_on_both_routes(tmp_path, fleet_home):
    """env-<set hash> names a run's package set (fleet/environment/wheels.py): not a user's to give."""
    for name, extra in (("env-39f8", ("--name", "env-39f8")), ("ENV-x", ("--name=ENV-x",))):   # plain, typer
        done = _create(tmp_path, f"d-{name}", *extra)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"fleet: error: invalid snapshot name '{name}': names starting 'env-' are "
                                      "fleet's own"), done.stderr
    assert _create(tmp_path, "d-envy", "--name", "environment-v2").returncode == 0


def test_a_planted_hex_name_does_not_shadow_the_id_it_prefixes(tmp_path, fleet_home):
    mine = json.loads(_create(tmp_path, "mine").stdout)["id"]
    theirs = json.loads(_create(tmp_path, "theirs").stdout)["id"]
    store = str(tmp_path / "store")
    prefix = mine[:6]
    (tmp_path / "store" / "refs" / prefix).write_text(theirs + "\n")   # written into the shared store by hand
    done = run_fleet(["snapshot", "show", prefix, "--store", store, "--json"], cwd=tmp_path)
    assert done.returncode == 2 and "is both a snapshot name and the prefix of another snapshot's id" in done.stderr
    done = run_fleet(["snapshot", "show", mine[:12], "--store", store, "--json"], cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["id"] == mine, done.stderr
    # The store stays usable: the name is listed, and its owner can remove it.
    listed = run_fleet(["snapshot", "ls", "--store", store, "--json"], cwd=tmp_path)
    assert listed.returncode == 0 and prefix in listed.stdout, listed.stderr
    # `rm` of the ambiguous text is refused too (which snapshot was meant?); the full id it names drops it.
    done = run_fleet(["snapshot", "rm", prefix, "--store", store], cwd=tmp_path)
    assert done.returncode == 2 and "is both a snapshot name" in done.stderr, done.stderr
    assert {m.name for m in (tmp_path / "store" / "manifests").iterdir()} == {mine, theirs}
    assert run_fleet(["snapshot", "rm", theirs, "--store", store], cwd=tmp_path).returncode == 0
    assert not (tmp_path / "store" / "refs" / prefix).exists()
    assert mine in {m.name for m in (tmp_path / "store" / "manifests").iterdir()}


def test_a_legacy_hex_name_that_shadows_nothing_still_works(tmp_path, fleet_home):
    theirs = json.loads(_create(tmp_path, "theirs").stdout)["id"]
    legacy = "2024" if not theirs.startswith("2024") else "2025"
    (tmp_path / "store" / "refs" / legacy).write_text(theirs + "\n")   # named before names were checked
    done = run_fleet(["snapshot", "show", legacy, "--store", str(tmp_path / "store"), "--json"], cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["id"] == theirs, done.stderr
