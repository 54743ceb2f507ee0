"""A hosts row whose number column holds text (SQLite keeps it in an INTEGER column; a hand edit or a
foreign client writes it): `fleet hosts ls` shows the host down and says why, a lease never picks it
(nor dials port 22 in place of the text), and `fleet hosts rm` removes it. Never an internal error."""
from __future__ import annotations

import json

from tests.conftest import run_fleet


def _add_row(port, gpus) -> None:
    from fleet.state import open_state
    state = open_state()
    try:
        state.db.execute(
            "INSERT INTO hosts (name, address, port, key_path, gpus, source, status, added_at, added_by)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            ("gpu-a", "127.0.0.1", port, "/nonexistent/key", gpus, "cli", "up", "2026-01-01T00:00:00+00:00", "me"))
    finally:
        state.close()


def test_a_host_row_with_text_in_its_number_columns_is_down_and_named(fleet_home, tmp_path):
    _add_row("abc", "x")
    shown = run_fleet(["hosts", "ls", "--json"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (host,) = json.loads(shown.stdout)["hosts"]
    assert host["status"] == "down"
    assert "port is 'abc'" in host["damaged"] and "gpus is 'x'" in host["damaged"]
    assert host["port"] is None and host["gpus"] is None
    table = run_fleet(["hosts", "ls"], cwd=tmp_path)
    assert table.returncode == 0 and "not a number" in table.stdout and "fleet hosts rm gpu-a" in table.stdout

    up = run_fleet(["up", "--provider", "ssh", "--gpus", "1", "--allow-dirty", "--", "true"], cwd=tmp_path)
    assert up.returncode != 0
    assert "internal error" not in up.stderr and "no SSH host is up" in up.stderr

    gone = run_fleet(["hosts", "rm", "gpu-a"], cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(run_fleet(["hosts", "ls", "--json"], cwd=tmp_path).stdout)["hosts"] == []


def test_digits_stored_as_text_are_read_as_the_number(fleet_home, tmp_path):
    from fleet.providers.ssh.hosts import Inventory
    from fleet.state import open_state
    _add_row("2222", "4")
    state = open_state()
    try:
        (host,) = Inventory(state.db).list()
    finally:
        state.close()
    assert (host.port, host.gpus, host.damaged) == (2222, 4, None)


def test_a_host_declared_in_fleet_toml_is_reached_by_its_declared_port_whatever_its_row_says(fleet_home):
    """Its port comes from the config; the row only keeps what was learnt, so a damaged one is probed again."""
    from fleet.providers.ssh.hosts import Inventory
    from fleet.providers.ssh.settings import HostConfig
    from fleet.state import open_state
    _add_row("abc", "x")
    state = open_state()
    try:
        (host,) = Inventory(state.db, [HostConfig(address="127.0.0.1", port=2200, name="gpu-a")]).list()
    finally:
        state.close()
    assert (host.port, host.gpus, host.damaged, host.status) == (2200, None, None, "unknown")
