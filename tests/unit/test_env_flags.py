"""[env] takes numbers and booleans; `--env KEY=VALUE` and `--env-file` add to it, in that order of
precedence; bad input is one line naming the flag or file:line."""
from __future__ import annotations

import json

import pytest

from fleet.config.env import parse_assignment, read_env_file, with_env
from fleet.config.loader import load_config
from fleet.errors import ConfigError, UsageError
from tests.conftest import run_fleet


def test_env_table_takes_numbers_and_booleans(tmp_path):
    (tmp_path / "fleet.toml").write_text('command = "x"\n[env]\nLR = 3e-4\nSTEPS = 100\nDEBUG = true\n'
                                         'EMPTY = ""\nNAME = "a b"\n')
    cfg = load_config(cwd=tmp_path)
    assert cfg.env == {"LR": "0.0003", "STEPS": "100", "DEBUG": "true", "EMPTY": "", "NAME": "a b"}
    (tmp_path / "fleet.toml").write_text('command = "x"\n[env]\nLIST = [1, 2]\n')
    with pytest.raises(ConfigError, match=r"fleet.toml:3: env.LIST: must be a string, number or true/false"):
        load_config(cwd=tmp_path)


def test_env_file_then_env_flags_override_the_table(tmp_path):
    (tmp_path / "fleet.toml").write_text('command = "x"\n[env]\nA = "toml"\nB = "toml"\nC = "toml"\n')
    env_file = tmp_path / "run.env"
    env_file.write_text('# comment\n\nexport B="from file"\nC=\'file\'\nD=x=y\n')
    cfg = with_env(load_config(cwd=tmp_path), ["C=flag", "E="], [env_file])
    assert cfg.env == {"A": "toml", "B": "from file", "C": "flag", "D": "x=y", "E": ""}


@pytest.mark.parametrize("text, message", [
    ("NOEQUALS", "--env: 'NOEQUALS' is not KEY=VALUE"),
    ("1BAD=x", "--env: '1BAD' is not an environment variable name"),
    ("=x", "--env: '' is not an environment variable name"),
])
def test_bad_assignments_are_one_line(text, message):
    with pytest.raises(UsageError) as err:
        parse_assignment(text)
    assert message in err.value.one_line()


def test_bad_env_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.env"
    bad.write_text("OK=1\nnot an assignment\n")
    with pytest.raises(UsageError, match=r"bad.env:2: the line is not KEY=VALUE") as err:
        read_env_file(bad)
    assert "assignment" not in err.value.one_line()


def test_a_bad_env_file_line_is_never_quoted_it_may_be_part_of_a_secret(tmp_path):
    """A multi-line quoted value (a PEM key) is not dotenv: its body lines must not reach the error."""
    bad = tmp_path / "key.env"
    bad.write_text('KEY="-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0secretbody\nAAA+/b==\n"\n')
    with pytest.raises(UsageError) as err:
        read_env_file(bad)
    line = err.value.one_line()
    assert "key.env:" in line and "MIIEvQ" not in line and "AAA+/b" not in line and "BEGIN" not in line
    with pytest.raises(UsageError, match="no such file"):
        read_env_file(tmp_path / "missing.env")


def test_env_flag_reaches_the_run_and_its_record(tmp_path, fleet_home):
    (tmp_path / "fleet.toml").write_text('project = "envs"\nmax_duration = "5m"\ncommand = "echo lr=$LR debug=$DEBUG"\n'
                                         '[env]\nDEBUG = false\n')
    proc = run_fleet(["up", "--gpus", "4", "--json", "--env", "LR=0.1", "-e", "DEBUG=1", "--allow-dirty"],
                     cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "lr=0.1 debug=1" in proc.stderr
    bad = run_fleet(["up", "--env", "oops"], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "fleet: error: --env: 'oops' is not KEY=VALUE (e.g. --env LR=3e-4)"]


def test_env_flags_travel_as_load_config_overrides(tmp_path):
    """A detached run's supervisor loads the config again from the CLI's overrides: --env is one."""
    from fleet.config.env import env_overrides
    (tmp_path / "fleet.toml").write_text('command = "x"\n[env]\nA = "toml"\nB = 2\n')
    overrides = {"env": env_overrides(["A=flag"], [])}
    assert json.loads(json.dumps(overrides)) == {"env": {"A": "flag"}}
    assert load_config(cwd=tmp_path, overrides=overrides).env == {"A": "flag", "B": "2"}
    assert env_overrides([], []) is None


def test_an_env_file_is_read_through_a_bound(tmp_path):
    """`--env-file /dev/zero` read the whole "file" into memory until the kernel killed fleet; a file
    over 1 MiB is now refused in one line, and a pipe (`--env-file <(pass show x)`) is still read."""
    import os
    from pathlib import Path
    big = tmp_path / "big.env"
    big.write_text("# a comment line, harmless but far too many of them\n" * 40_000)   # ~2 MiB
    with pytest.raises(UsageError, match="larger than 1 MiB"):
        read_env_file(big)
    if os.path.exists("/dev/zero"):
        with pytest.raises(UsageError, match="larger than 1 MiB"):
            read_env_file(Path("/dev/zero"))
    r, w = os.pipe()
    try:
        os.write(w, b"A=1\nexport B='two'\n")
        os.close(w)
        assert read_env_file(Path(f"/dev/fd/{r}")) == {"A": "1", "B": "two"}
    finally:
        os.close(r)
