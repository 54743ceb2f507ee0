"""FLEET_RECORDS_KEY_FILE is read as a key: a regular file, to a bound. /dev/zero there took a run's
controller out of memory after its machines were released, and a key that cannot be used was only
noticed after leasing (the record then anchored unsigned, `fleet up` exiting 0). Red-team findings."""
from __future__ import annotations

import os

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("key_file, said", [("/dev/zero", "not a regular file"), ("fifo", "not a regular file"),
                                            ("big", "more than 4096 bytes"),
                                            ("short", "use at least 16"), ("missing", "cannot read")])
def test_a_key_file_that_is_no_key_fails_in_one_line_before_anything_is_leased(experiment, fleet_home, tmp_path,
                                                                               key_file, said):
    (tmp_path / "big").write_bytes(b"k" * 10_000_000)
    (tmp_path / "short").write_text("abc\n")
    os.mkfifo(tmp_path / "fifo")                         # opening it for reading used to block until a writer came
    path = key_file if key_file.startswith("/") else str(tmp_path / key_file)
    proc = run_fleet(["up", "-y", "--", "true"], cwd=experiment, timeout=120,
                     env={"FLEET_RECORDS_KEY_FILE": path})
    assert proc.returncode in (2, 3) and said in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2 and "Traceback" not in proc.stderr
    assert not any((fleet_home / "machines").glob("*"))                  # nothing was leased
