"""Ctrl-C in fleet's first tens of milliseconds (importing typer, the start-up checks), before a
command's own handling: one line and exit 130, not a Python traceback (red-team finding)."""
from __future__ import annotations

import pytest

from fleet.cli import main


def test_ctrl_c_during_start_up_is_one_line_and_130(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(main, "_absolute_fleet_home", interrupted)
    with pytest.raises(SystemExit) as ended:
        main.run()
    assert ended.value.code == 130
    assert capsys.readouterr().err == "fleet: cancelled\n"
