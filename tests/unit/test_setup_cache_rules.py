"""Which setups the setup cache may skip (fleet/setup_cache.py), and what the machine hashes for them
(fleet/environment/probe.py `setup-state`)."""
from __future__ import annotations

import hashlib
import os

import pytest

from fleet.environment.probe import _file_hash, _tree_hash, setup_files
from fleet.setup_cache import SetupState, install_only, setup_digest
from tests.fixtures.deep_tree import DEPTH, deep_tree, remove


@pytest.mark.parametrize("setup, files", [
    ("pip install -r requirements.txt", ("r:requirements.txt",)),
    ("pip install -U --no-index --find-links /w tinypkg", ("f:/w",)),
    ("python3 -m pip install -q -c c.txt -r r.txt && pip install numpy==1.26.4", ("c:c.txt", "r:r.txt")),
    ("uv pip install 'torch==2.3.0'\npip install --requirement=req/dev.txt", ("r:req/dev.txt",)),
    ("pip install dist/pkg-1.0-py3-none-any.whl", ("w:dist/pkg-1.0-py3-none-any.whl",)),
])
def test_install_only_setups_and_the_files_they_name(setup, files):
    spec = install_only(setup)
    assert spec is not None and spec.files == files


@pytest.mark.parametrize("setup", [
    "pip install numpy",                       # unpinned, from an index
    "pip install 'numpy>=1.2'",
    "pip install -e .",
    "pip install .",
    "pip install -r requirements.txt && python prepare.py",
    "pip install -r requirements.txt | tee log",
    "pip install -r requirements.txt > log",
    "pip install $PKG==1.0",
    "pip install -r https://example.com/r.txt",
    "pip install --pre x==1.0",                # an option the cache cannot vouch for
    "python -c 'import numpy' || pip install -r requirements.txt",
    "echo hi",
    "",
])
def test_anything_else_always_runs(setup):
    assert install_only(setup) is None


def test_the_digest_changes_with_the_text_or_any_file(tmp_path):
    code = tmp_path / "code"
    (code / "req").mkdir(parents=True)
    (code / "requirements.txt").write_text("-r req/base.txt\n-c constraints.txt\n")
    (code / "req" / "base.txt").write_text("tinypkg==1.0\n")
    (code / "constraints.txt").write_text("tinypkg<2\n")
    spec = install_only("pip install -r requirements.txt")
    files, why = setup_files(str(code), list(spec.files))
    assert why == "" and set(files) == {"r:requirements.txt", "r:req/base.txt", "c:constraints.txt"}
    before = setup_digest(spec, files)
    (code / "req" / "base.txt").write_text("tinypkg==2.0\n")     # a nested file changed
    assert setup_digest(spec, setup_files(str(code), list(spec.files))[0]) != before
    other = install_only("pip install -q -r requirements.txt")
    assert setup_digest(other, files) != before                   # the text changed
    (code / "requirements.txt").write_text("-e .\n")
    assert "no file hash describes" in setup_files(str(code), list(spec.files))[1]


def test_skipped_only_when_marker_setup_and_package_set_all_match():
    marker = {"setup": "d", "packages": "p"}
    assert SetupState("d", "p", marker).done_before
    assert not SetupState("d", "p2", marker).done_before          # the venv's packages changed since
    assert not SetupState("d2", "p", marker).done_before
    assert not SetupState("d", "p", None).done_before
    assert not SetupState("d", "p", marker, uncacheable="an -e line").done_before


def test_a_find_links_directory_deeper_than_the_stack_is_hashed(tmp_path):
    """A wheelhouse in the code holding a tree deeper than Python's stack (an unpacked sdist copied
    into itself in a loop): os.walk recursed once per level before Python 3.12, so the probe died on
    RecursionError and every run said 'setup cache: could not check the machines' and ran setup.
    A shallow directory's hash stays what os.walk made it (names and contents in its sorted order,
    no link to a directory entered), so a venv's setup marker from before still matches."""
    code = tmp_path / "code"
    shallow = code / "wheels"
    for rel in ("b/z.whl", "b/a/y.whl", "a.whl", "c/x.whl", "B/w.whl"):
        (shallow / rel).parent.mkdir(parents=True, exist_ok=True)
        (shallow / rel).write_text(rel)
    (shallow / "link").symlink_to(shallow / "b")
    (shallow / "flink").symlink_to(shallow / "a.whl")
    h = hashlib.sha256()
    for root, dirs, names in os.walk(shallow):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, shallow).encode() + b"\0" + _file_hash(full).encode() + b"\n")
    assert _tree_hash(str(shallow)) == h.hexdigest()
    deep_tree(code / "wheels" / "sub")
    try:
        spec = install_only("pip install -U --no-index --find-links wheels tinypkg")
        files, why = setup_files(str(code), list(spec.files))
        assert why == "" and files["f:wheels"] is not None
        (code / "wheels" / "sub").joinpath(*["d"] * DEPTH, "left-by-the-job").write_text("y")
        assert setup_files(str(code), list(spec.files))[0] != files
    finally:
        remove(code)

