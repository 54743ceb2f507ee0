"""`fleet hosts add ADDRESS`: an empty address dialled ":22" and failed as unreachable (exit 10), a line
break cut the error to "fleet: error: h", and an address, --name or --user with ESC sequences or spaces
went on to ssh and into the inventory `fleet status` shows. They are now one usage error (exit 2),
before any connection and with nothing stored."""
from __future__ import annotations

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("args, flag", [
    ([""], "address"),
    (["a b"], "address"),
    (["h\nx"], "address"),
    (["h\x1b]0;pwned\x07"], "address"),
    (["127.0.0.1", "--name", "n\x1b[2J"], "--name"),
    (["127.0.0.1", "--name", "two words"], "--name"),
    (["127.0.0.1", "--user", "-oProxyCommand=x"], "--user"),
])
def test_a_host_word_that_is_not_one_word_is_refused(tmp_path, fleet_home, args, flag):
    key = tmp_path / "id_ed25519"
    key.write_text("not used: refused before any connection\n")
    proc = run_fleet(["hosts", "add", *args, "--key", str(key), "--yes"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fleet: error: host {flag} ") and "one word" in lines[0]
    assert "\x1b" not in proc.stderr
    listed = run_fleet(["hosts", "ls", "--json", "--no-probe"], cwd=tmp_path)
    assert listed.returncode == 0 and '"hosts": []' in listed.stdout


@pytest.mark.parametrize("gpus", ["99999999999999999999", "1025"])
def test_a_gpu_count_no_host_has_is_refused_before_connecting(tmp_path, fleet_home, gpus):
    """`--gpus 99999999999999999999` went on to dial the host (and past SQLite's integers after)."""
    from fleet.config.values import MAX_HOST_GPUS
    assert MAX_HOST_GPUS == 1024
    key = tmp_path / "id_ed25519"
    key.write_text("not used\n")
    proc = run_fleet(["hosts", "add", "127.0.0.1", "--port", "1", "--gpus", gpus, "--key", str(key), "--yes"],
                     cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"fleet: error: Invalid value for '--gpus': {gpus} is not in the "
                                                "range 1<=x<=1024. (see `fleet hosts add --help`)"]
