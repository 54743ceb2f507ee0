"""Two `fleet up` runs with the same [data] on the same host: the chunk cache outlives the first
lease, so the second run sends no chunk bytes (the stage line says so)."""
from __future__ import annotations

import os
import re

from tests.conftest import run_fleet


def test_second_run_same_host_sends_no_chunk_bytes(fleet_home, tmp_path):
    exp = tmp_path / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "w.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (exp / "fleet.toml").write_text('project = "t"\ncommand = "cat $FLEET_DATA/train/w.bin | wc -c"\n'
                                    'template = "local-1gpu"\nmax_duration = "5m"\n[data]\ntrain = "data"\n')
    sent = []
    for _ in range(2):
        up = run_fleet(["up", "--ci"], cwd=exp, timeout=240)
        assert up.returncode == 0, up.stderr[-2000:]
        assert str(2 * 1024 * 1024) in up.stdout + up.stderr
        m = re.search(r"pinned inputs on 1 machine\(s\), (\d+) bytes of chunks sent", up.stdout + up.stderr)
        assert m, (up.stdout + up.stderr)[-2000:]
        sent.append(int(m.group(1)))
    assert sent[0] >= 2 * 1024 * 1024 and sent[1] == 0
