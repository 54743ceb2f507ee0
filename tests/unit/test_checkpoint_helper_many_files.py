"""The checkpoint helper (fleet/remote/checkpoint_helper.py, run on the machine) kept every scanned
file open until it sent: a sharded checkpoint with more files than the hard open-file limit failed
every upload ("Too many open files") and the run still ended `succeeded` with no checkpoint. Past
the descriptors it may hold, files are reopened by path to send, checked to be the same file."""
from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
from pathlib import Path

HELPER = Path(__file__).resolve().parents[2] / "fleet" / "remote" / "checkpoint_helper.py"


def _limit(n: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def test_a_checkpoint_of_more_files_than_descriptors_is_scanned_and_sent_whole(tmp_path):
    ckpt = tmp_path / "ckpt" / "shards"
    ckpt.mkdir(parents=True)
    for i in range(300):
        (ckpt / f"s{i:05d}").write_bytes(b"shard %d " % i * 50)
    proc = subprocess.Popen([sys.executable, "-S", str(HELPER), str(tmp_path / "ckpt")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit(96))
    head = json.loads(proc.stdout.readline())
    files = [e for e in head["entries"] if e["type"] == "file"]
    assert len(files) == 300
    want = sorted({h for e in files for h, _n in e["chunks"]})
    proc.stdin.write(json.dumps({"want": want}).encode() + b"\n")
    proc.stdin.close()
    got = {}
    while True:
        line = proc.stdout.readline()
        if line.startswith(b"{"):
            assert json.loads(line) == {"done": True}
            break
        h, n = line[:64].decode(), int(line[64:76])
        data = proc.stdout.read(n)
        assert hashlib.sha256(data).hexdigest() == h
        got[h] = data
    assert proc.wait(30) == 0, proc.stderr.read()
    assert set(got) == set(want)


def test_a_file_replaced_before_it_is_reopened_fails_the_upload_in_one_line(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for i in range(120):
        (ckpt / f"s{i:05d}").write_bytes(b"v1 %d " % i * 40)
    proc = subprocess.Popen([sys.executable, "-S", str(HELPER), str(ckpt)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit(80))
    head = json.loads(proc.stdout.readline())
    last = [e for e in head["entries"] if e["type"] == "file"][-1]         # past the descriptors held
    replacement = ckpt / "new"
    replacement.write_bytes(b"v2")
    replacement.rename(ckpt / last["path"])                                 # write, then rename
    proc.stdin.write(json.dumps({"want": [last["chunks"][0][0]]}).encode() + b"\n")
    proc.stdin.close()
    proc.stdout.read()
    assert proc.wait(30) == 1
    assert proc.stderr.read().decode().strip().endswith(f"{last['path']} was replaced while it was being checkpointed")
