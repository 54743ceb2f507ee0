"""`fleet config schema -o DIR`: a directory (`-o .`, `-o ""`, `-o ~`) is refused in one line with
the environment exit code, as any other path that cannot be written; `-o .` used to end in
'fleet: internal error: ValueError: PosixPath('.') has an empty name'."""
from __future__ import annotations

import pytest

from fleet.errors import ExitCode
from tests.unit.test_config_schema_init import run_fleet


@pytest.mark.parametrize("target", [".", "", "DIR"])
def test_a_directory_as_the_output_is_one_line(tmp_path, monkeypatch, capsys, target):
    monkeypatch.chdir(tmp_path)
    target = str(tmp_path) if target == "DIR" else target
    assert run_fleet(monkeypatch, "config", "schema", "-o", target) == ExitCode.ENVIRONMENT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fleet: error: cannot write ") and "Is a directory" in err
    assert list(tmp_path.iterdir()) == []      # no temporary file left behind
