"""Each AWS sandbox instance keeps a chunk cache of its own, as an EC2 instance's disk does, and it
goes with the instance: a 2-instance run puts the data set on both, and the next run's fresh
instance receives it again (nothing left in a cache on this host for it to build from). Were the
instances to share FLEET_HOME's cache, the second instance and the second run would receive
nothing, and a sandbox measurement of what staging sends would not be what the cloud sends. (The
second instance of a run receives it from the first, not from the controller: sync_peers.)"""
from __future__ import annotations

import os
import re

import pytest

from tests.conftest import run_fleet
from tests.e2e import test_aws_sandbox as aws_e2e

pytestmark = pytest.mark.timeout(300)
sandbox = aws_e2e.sandbox     # the same no-account sandbox fixture (module scope: one here)
DATA = 1024 * 1024
SENT = re.compile(r"stage: pinned inputs on (\d+) machine\(s\), (\d+) bytes of chunks sent")


def _staged(stderr: str) -> tuple[int, int]:
    found = SENT.findall(stderr)
    assert len(found) == 1, stderr[-3000:]
    machines, sent = found[0]
    return int(machines), int(sent)


def test_every_instance_receives_the_data_and_none_is_cached_on_the_host(sandbox, tmp_path):
    env, home = sandbox
    exp = tmp_path / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "blob.bin").write_bytes(os.urandom(DATA))      # incompressible: every byte must travel
    (exp / "fleet.toml").write_text('project = "aws-cache"\nprovider = "aws"\ntemplate = "aws-1gpu"\n'
                                    'max_duration = "10m"\ncommand = "test -s $FLEET_DATA/train/blob.bin"\n'
                                    '[data]\ntrain = "data"\n')

    first = run_fleet(["up", "--gpus", "2"], cwd=exp, env=env, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    machines, sent = _staged(first.stderr)
    # both instances received the whole data set (plus the few bytes of the experiment's files): the
    # controller sent it once, and the first instance forwarded it to the second (sync_peers)
    assert machines == 2 and DATA <= sent < DATA + 64 * 1024, first.stderr[-3000:]
    forwarded = re.search(r", (\d+) bytes forwarded from the first host to the others", first.stderr)
    assert forwarded and DATA <= int(forwarded.group(1)) < DATA + 64 * 1024, first.stderr[-3000:]

    second = run_fleet(["up", "--gpus", "1"], cwd=exp, env=env, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    machines, sent = _staged(second.stderr)
    assert machines == 1 and DATA <= sent < DATA + 64 * 1024, second.stderr[-3000:]

    # the caches went with their instances; the controller's host cache was never used
    assert not list((home / "aws-sandbox" / "machines").iterdir())
    host_cache = home / "cache" / "chunks"
    assert not [f for _d, _s, files in os.walk(host_cache) for f in files if len(f) == 64]
