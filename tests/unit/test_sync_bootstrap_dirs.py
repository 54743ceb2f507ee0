"""The sync bootstrap runs the helper kept in the host's chunk cache only from this user's own
directories (tests/integration/test_ssh_hosts_shared_workdir.py: another user's is refused). Under a
umask of 002 (Ubuntu's pam_umask for SSH sessions) its first run left the cache group-writable and
every later sync was refused; a configured cache_dir that is a link was refused too."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from fleet.snapshots.sync_remote import BOOTSTRAP, helper_hash, helper_source


def _boot(helper_path: str, umask: int = 0o002) -> subprocess.CompletedProcess:
    src = helper_source()
    return subprocess.run([sys.executable, "-S", "-c", BOOTSTRAP, helper_hash(), helper_path],
                          input=b'{"bogus": 1}\n' + b"%d\n" % len(src) + src, capture_output=True,
                          preexec_fn=lambda: os.umask(umask), timeout=60)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_cache_made_under_umask_002_is_private_and_used_again(tmp_path):
    helper = f"{tmp_path}/chunks/helper/{helper_hash()}.py"
    first, second = _boot(helper), _boot(helper)
    assert b'"helper": "need"' in first.stdout, first.stderr                  # sent once, kept
    assert b"refusing" not in second.stderr and b'"helper": "need"' not in second.stdout, second.stderr
    assert _mode(tmp_path / "chunks") == 0o700 and _mode(tmp_path / "chunks" / "helper") == 0o700


def test_a_group_writable_helper_dir_of_ours_is_made_private_and_what_it_kept_is_dropped(tmp_path):
    helper_dir = tmp_path / "chunks" / "helper"
    helper_dir.mkdir(parents=True)
    os.chmod(tmp_path / "chunks", 0o775)
    os.chmod(helper_dir, 0o775)
    planted = helper_dir / f"{helper_hash()}.py"
    planted.write_bytes(b"raise SystemExit('planted helper ran')\n")
    run = _boot(str(planted))
    assert b"planted helper ran" not in run.stderr and b'"helper": "need"' in run.stdout, run.stderr
    assert _mode(tmp_path / "chunks") == 0o700 and _mode(helper_dir) == 0o700


def test_a_configured_cache_dir_that_is_a_link_to_a_private_directory_is_used(tmp_path):
    real = tmp_path / "nvme-cache"
    real.mkdir(mode=0o700)
    (tmp_path / "cache").symlink_to(real)
    run = _boot(f"{tmp_path}/cache/helper/{helper_hash()}.py")
    assert b"refusing" not in run.stderr, run.stderr
    assert (real / "helper" / f"{helper_hash()}.py").is_file()


def test_a_cache_dir_of_ours_others_can_read_is_made_private(tmp_path):
    """Its chunks are the user's data: a 0755 cache (made by hand, or reached through a link) let
    every user of the host read them."""
    (tmp_path / "chunks").mkdir(mode=0o755)
    os.chmod(tmp_path / "chunks", 0o755)
    run = _boot(f"{tmp_path}/chunks/helper/{helper_hash()}.py")
    assert b"refusing" not in run.stderr, run.stderr
    assert _mode(tmp_path / "chunks") == 0o700


def test_the_helper_keeps_chunks_in_the_root_the_bootstrap_checked(tmp_path):
    """The request names the cache again; a link there swapped after the bootstrap's checks (another
    user's, to a directory of theirs) must not be where the cache goes: the checked root is used."""
    import json
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "cache").symlink_to(real)
    swapped = tmp_path / "theirs"
    request = {"cache": str(swapped), "state": str(tmp_path / "state"), "cache_max": None,
               "targets": [{"dest": str(tmp_path / "dest"), "ids": ["a" * 64], "read_only": True}]}
    src = helper_source()
    run = subprocess.run([sys.executable, "-S", "-c", BOOTSTRAP, helper_hash(),
                          f"{tmp_path}/cache/helper/{helper_hash()}.py"],
                         input=json.dumps(request).encode() + b"\n%d\n" % len(src) + src,
                         capture_output=True, timeout=60)
    assert b'"need"' in run.stdout, (run.stdout, run.stderr)
    assert (real / "ff").is_dir() and not swapped.exists()


def test_a_cache_path_with_dotdot_is_refused_in_one_line(tmp_path):
    """The kernel resolves '..' after a link, the link check read it as text: a traceback
    (FileNotFoundError on a path that was never there) instead of a sync."""
    (tmp_path / "a").mkdir()
    run = _boot(f"{tmp_path}/a/../chunks/helper/{helper_hash()}.py")
    assert run.returncode != 0 and b"Traceback" not in run.stderr, run.stderr
    assert run.stderr.decode().strip().endswith("has a '..' in it: give the directory without one"), run.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="making a link another user owns needs root")
def test_nothing_is_made_through_a_link_another_user_planted(tmp_path):
    target = tmp_path / "victim-home"
    target.mkdir(mode=0o755)
    link = tmp_path / "chunks"
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)
    run = _boot(f"{tmp_path}/chunks/sub/helper/{helper_hash()}.py")
    assert b"a link another user made" in run.stderr and b"Traceback" not in run.stderr, run.stderr
    assert list(target.iterdir()) == [] and _mode(target) == 0o755
