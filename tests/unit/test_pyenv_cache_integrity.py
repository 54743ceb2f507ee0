"""The host's venv cache (fleet/remote/pyenv_remote.py, run here as a machine runs it) can never be
changed through a lease's venv, and an entry changed any other way is discarded, never cloned."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "fleet" / "remote" / "pyenv_remote.py"
SETUP = "pip install tinypkg"


def remote(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True,
                         timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def site(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def published_entry(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A lease whose setup 'installed' tinypkg, kept in the cache under its key."""
    cache, code = tmp_path / "cache", tmp_path / "code"
    code.mkdir()
    first = remote("prepare", str(tmp_path / "one"), str(cache), str(code), SETUP)
    assert first["source"] == "fresh"
    (site(tmp_path / "one") / "tinypkg.py").write_text("VERSION = '1.0'\n")
    assert remote("publish", first["dir"], str(cache), first["key"])["published"] is True
    return cache, code, first


def test_writing_in_place_into_a_lease_venv_reaches_neither_the_cache_nor_the_next_lease(tmp_path):
    cache, code, first = published_entry(tmp_path)
    second = remote("prepare", str(tmp_path / "two"), str(cache), str(code), SETUP)
    assert second["source"] == "cached"
    for lease in ("one", "two"):   # both leases write into their venv's files in place (not replace)
        for path in (tmp_path / lease / "bin" / "pip", site(tmp_path / lease) / "tinypkg.py"):
            assert path.stat().st_nlink == 1, f"{path} shares its inode with another venv"
            os.chmod(path, 0o755)
            with open(path, "r+") as fh:
                fh.write("#!/bin/sh\necho POISONED\n")
    entry = cache / first["key"]
    assert (site(entry) / "tinypkg.py").read_text() == "VERSION = '1.0'\n"
    assert "POISONED" not in (entry / "bin" / "pip").read_text()
    third = remote("prepare", str(tmp_path / "three"), str(cache), str(code), SETUP)
    assert (site(tmp_path / "three") / "tinypkg.py").read_text() == "VERSION = '1.0'\n"
    assert "POISONED" not in (tmp_path / "three" / "bin" / "pip").read_text()
    assert third["source"] == "cached" and third["discarded"] == []


def test_a_cache_entry_changed_after_it_was_made_is_discarded_never_cloned(tmp_path):
    cache, code, first = published_entry(tmp_path)
    entry = cache / first["key"]
    assert not os.access(entry / "bin" / "pip", os.W_OK) or os.geteuid() == 0   # sealed read-only
    os.chmod(entry / "bin", 0o755)
    os.chmod(entry / "bin" / "pip", 0o755)
    with open(entry / "bin" / "pip", "r+") as fh:   # same size is no disguise: content is hashed
        fh.write("#!/bin/sh\necho POISONED\n")
    second = remote("prepare", str(tmp_path / "two"), str(cache), str(code), SETUP)
    assert "POISONED" not in (tmp_path / "two" / "bin" / "pip").read_text()
    assert not (site(tmp_path / "two") / "tinypkg.py").exists()   # a fresh venv, not the entry's
    assert second["discarded"] == [first["key"]] and second["source"] == "fresh"
    assert not entry.exists()


def test_a_file_added_to_a_cache_entry_makes_it_discarded(tmp_path):
    """A .pth file in site-packages runs at every interpreter start: an addition is a change too."""
    cache, code, first = published_entry(tmp_path)
    entry = cache / first["key"]
    os.chmod(site(entry), 0o755)
    (site(entry) / "evil.pth").write_text("import os; os.system('echo POISONED')\n")
    second = remote("prepare", str(tmp_path / "two"), str(cache), str(code), SETUP)
    assert not (site(tmp_path / "two") / "evil.pth").exists()
    assert second["discarded"] == [first["key"]] and second["source"] == "fresh"


def test_a_tampered_base_venv_is_rebuilt(tmp_path):
    cache, code = tmp_path / "cache", tmp_path / "code"
    code.mkdir()
    first = remote("prepare", str(tmp_path / "one"), str(cache), str(code), SETUP)
    [base] = cache.glob("base-*")
    os.chmod(base / "bin", 0o755)
    (base / "bin" / "python-evil").write_text("#!/bin/sh\n")
    second = remote("prepare", str(tmp_path / "two"), str(cache), str(code), "other setup")
    assert not (tmp_path / "two" / "bin" / "python-evil").exists()
    assert second["source"] == "fresh" and second["discarded"] == [base.name]
    assert (base / "bin" / "python").exists() and not (base / "bin" / "python-evil").exists()   # made again
    assert first["key"] != second["key"]


def test_an_entry_from_before_manifests_is_discarded(tmp_path):
    """Entries made by fleet versions that hard-linked lease venvs into the cache are not trusted."""
    cache, code, first = published_entry(tmp_path)
    entry = cache / first["key"]
    marker = entry / ".fleet-pyenv.json"
    os.chmod(entry, 0o755)
    os.chmod(marker, 0o644)
    info = json.loads(marker.read_text())
    info.pop("manifest", None)
    marker.write_text(json.dumps(info))
    second = remote("prepare", str(tmp_path / "two"), str(cache), str(code), SETUP)
    assert not (site(tmp_path / "two") / "tinypkg.py").exists()
    assert second["discarded"] == [first["key"]] and second["source"] == "fresh"


def test_a_fifo_in_a_lease_venv_neither_hangs_publishing_nor_enters_the_cache(tmp_path):
    cache, code = tmp_path / "cache", tmp_path / "code"
    code.mkdir()
    first = remote("prepare", str(tmp_path / "one"), str(cache), str(code), SETUP)
    os.mkfifo(site(tmp_path / "one") / "pipe")
    assert remote("publish", first["dir"], str(cache), first["key"])["published"] is True
    assert not (site(cache / first["key"]) / "pipe").exists()
    second = remote("prepare", str(tmp_path / "two"), str(cache), str(code), SETUP)
    assert second["source"] == "cached" and second["discarded"] == []


def test_a_garbled_manifest_is_a_discarded_entry_not_a_crash(tmp_path):
    cache, code, first = published_entry(tmp_path)
    entry = cache / first["key"]
    marker = entry / ".fleet-pyenv.json"
    os.chmod(entry, 0o755)
    os.chmod(marker, 0o644)
    info = json.loads(marker.read_text())
    info["manifest"] = {k: ("f 9x9 abc" if v.startswith("f ") else v) for k, v in info["manifest"].items()}
    marker.write_text(json.dumps(info))
    second = remote("prepare", str(tmp_path / "two"), str(cache), str(code), SETUP)
    assert second["discarded"] == [first["key"]] and second["source"] == "fresh"
