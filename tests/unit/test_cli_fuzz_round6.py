"""CLI findings of a fuzzing red team: `fleet init` replaced a dangling fleet.toml link without
--force, `fleet audit --verify RUN` said "chain intact" for any RUN (the run was ignored), and a long
value took the secret masker minutes of CPU (a quadratic scan)."""
from __future__ import annotations

import time

from fleet.masking import Masker
from tests.conftest import run_fleet


def test_init_keeps_a_dangling_link_unless_forced(tmp_path, fleet_home):
    (tmp_path / "fleet.toml").symlink_to("/mnt/not-mounted/team-fleet.toml")
    refused = run_fleet(["init"], cwd=tmp_path)
    assert refused.returncode == 2 and "already exists" in refused.stderr, refused.stderr
    assert (tmp_path / "fleet.toml").is_symlink()


def test_audit_refuses_options_it_would_ignore(tmp_path, fleet_home):
    for args, needle in ((["audit", "--verify", "r-doesnotexist"], "--verify checks every record"),
                         (["audit", "--deep"], "--deep goes with --verify")):
        proc = run_fleet(args, cwd=tmp_path)
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)


def test_masking_a_long_value_is_linear():
    """A 200 KB [env] value (the red team's `-e A=xxxx…`) beside a URL with a password."""
    from fleet.config.model import Config
    from pathlib import Path
    config = Config(path=None, base_dir=Path("."), project="p", name="p", command="true",
                    env={"A": "x" * 200_000, "DB": "git+https://user:secretpw@host/repo"})
    started = time.monotonic()
    masker = Masker.for_config(config, environ={})
    assert time.monotonic() - started < 2
    assert "secretpw" not in masker("cloning git+https://user:secretpw@host/repo")
