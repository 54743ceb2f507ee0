"""`fleet up` with [data] leaves the user's data directory as it was, and the run sees exactly the
snapshot's files in $FLEET_DATA/<name> (no marker file: a file-hash check of it must match)."""
from __future__ import annotations

from tests.conftest import run_fleet

LISTING = "import os; print('LISTING', sorted(os.listdir(os.environ['FLEET_DATA'] + '/train')))"


def test_up_with_data_writes_no_marker_anywhere(fleet_home, tmp_path):
    exp = tmp_path / "exp"
    (exp / "data" / "sub").mkdir(parents=True)
    (exp / "data" / "x.txt").write_text("input\n")
    (exp / "data" / "sub" / "y.txt").write_text("more\n")
    (exp / "listing.py").write_text(LISTING + "\n")
    (exp / "fleet.toml").write_text('project = "t"\ncommand = "python listing.py"\n'
                                    'template = "local-1gpu"\nmax_duration = "5m"\n[data]\ntrain = "data"\n')
    before = sorted(p.relative_to(exp / "data").as_posix() for p in (exp / "data").rglob("*"))
    for _ in range(2):                       # the second run re-snapshots the unchanged data
        up = run_fleet(["up", "--ci"], cwd=exp, timeout=200)
        assert up.returncode == 0, up.stderr[-2000:]
        assert "LISTING ['sub', 'x.txt']" in up.stdout + up.stderr
    assert sorted(p.relative_to(exp / "data").as_posix() for p in (exp / "data").rglob("*")) == before
