"""`[[hosts]]` in fleet.toml holds to what `fleet hosts add` checks (red-team finding): an address,
user, name or supervisor_login that starts with '-' (an option to ssh: `-oProxyCommand=…`), holds a
space or a control character (ESC sequences in `fleet status`) is refused in one line at its line."""
from __future__ import annotations

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("key, value", [("address", "-oProxyCommand=touch /tmp/x"), ("user", "-oX=y"),
                                        ("name", "a\\u001b[31m"), ("address", "gpu 1"),
                                        ("supervisor_login", "sup\\nervisor")])
def test_a_host_word_ssh_would_misread_is_refused_at_its_line(tmp_path, fleet_home, key, value):
    extra = "" if key == "address" else 'address = "gpu1.example.org"\n'
    (tmp_path / "fleet.toml").write_text(f'project = "t"\ncommand = "x"\n[[hosts]]\n{extra}{key} = "{value}"\n')
    proc = run_fleet(["up", "--dry-run", "-p", "ssh"], cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"fleet.toml:{4 if key == 'address' else 5}: hosts[0].{key}: must be one word" in lines[0]


def test_plain_host_words_still_load(tmp_path, fleet_home):
    (tmp_path / "fleet.toml").write_text('project = "t"\ncommand = "x"\n[[hosts]]\naddress = "10.0.0.5"\n'
                                         'user = "ubuntu"\nname = "gpu-1"\nsupervisor_login = "fleet-sup"\n')
    assert run_fleet(["up", "--dry-run", "-p", "ssh"], cwd=tmp_path).returncode == 0
