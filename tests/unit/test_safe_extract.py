"""Outputs come home as a tar the machine made: links are kept, and nothing a hostile machine
puts in the tar may write or point outside the run's directory (fleet/safe_extract.py)."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from fleet.safe_extract import extract_stream


def _tar(members: list[tuple[str, str, bytes | str]], compress: str = "") -> io.BytesIO:
    """members: (kind, name, data-or-linkname), kind in file/dir/sym/hard/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compress}") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = data
            tar.addfile(info)
    buf.seek(0)
    return buf


@pytest.fixture
def dest(tmp_path) -> Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("keep me")
    return tmp_path / "run" / "node-0"


def _untouched(tmp_path: Path) -> None:
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["secret"]
    assert (tmp_path / "outside" / "secret").read_text() == "keep me"


def test_files_dirs_symlinks_and_hard_links_are_kept(dest, tmp_path):
    got = extract_stream(_tar([("dir", "./ckpt", b""), ("file", "./ckpt/model.bin", b"weights"),
                               ("sym", "./latest", "ckpt/model.bin"), ("hard", "./ckpt/copy.bin", "./ckpt/model.bin"),
                               ("sym", "./ckpt/up", "../latest")], compress="gz"), dest)
    assert got.skipped == []
    assert (dest / "ckpt" / "model.bin").read_bytes() == b"weights"
    assert os.readlink(dest / "latest") == "ckpt/model.bin" and (dest / "latest").read_bytes() == b"weights"
    assert os.readlink(dest / "ckpt" / "up") == "../latest"
    assert os.stat(dest / "ckpt" / "copy.bin").st_ino == os.stat(dest / "ckpt" / "model.bin").st_ino
    assert (got.files, got.hardlinks, got.symlinks) == (2, 1, 2)


@pytest.mark.parametrize("members, why", [
    ([("file", "../outside/evil", b"x")], "leaves"),
    ([("file", "/tmp/evil-abs", b"x")], "absolute"),
    ([("sym", "esc", "/etc")], "absolute"),
    ([("sym", "esc", "../outside")], "outside"),
    ([("sym", "esc", "../outside/secret")], "outside"),
    # each link alone stays inside; together the second leads out (resolved only once both exist)
    ([("sym", "b", "a/.."), ("sym", "a", ".")], "outside"),
    ([("hard", "h", "../outside/secret")], "leaves"),
    ([("hard", "h", "never-written")], "hard link"),
    ([("fifo", "f", b"")], "special"),
])
def test_hostile_members_are_refused_and_reported(dest, tmp_path, members, why):
    got = extract_stream(_tar(members), dest)
    assert len(got.skipped) == 1 and why in got.skipped[0], got.skipped
    _untouched(tmp_path)
    for link in (p for p in dest.rglob("*") if p.is_symlink()):   # what is left leads inside
        assert link.resolve().is_relative_to(dest.resolve()), link


def test_a_symlink_then_a_write_through_it_never_leaves_dest(dest, tmp_path):
    # Classic: plant `d -> ../outside`, then write `d/secret`. Links are made last, so the write
    # lands in a real directory d/ inside dest, and the link itself is refused (d is a directory).
    # `f -> ../outside/secret` then a file `f`: the file replaces the link, as in any tar.
    got = extract_stream(_tar([("sym", "d", "../outside"), ("file", "d/secret", b"owned"),
                               ("sym", "f", "../outside/secret"), ("file", "f", b"owned")]), dest)
    _untouched(tmp_path)
    assert (dest / "d" / "secret").read_bytes() == b"owned" and not (dest / "d").is_symlink()
    assert (dest / "f").read_bytes() == b"owned" and not (dest / "f").is_symlink()
    assert len(got.skipped) == 1 and got.skipped[0].startswith("d:"), got.skipped


def test_a_symlink_already_in_dest_is_never_followed(dest, tmp_path):
    dest.mkdir(parents=True)
    (dest / "pre").symlink_to(tmp_path / "outside")
    (dest / "file").symlink_to(tmp_path / "outside" / "secret")
    got = extract_stream(_tar([("file", "pre/secret", b"owned"), ("file", "file", b"replaced")]), dest)
    _untouched(tmp_path)
    assert (dest / "file").read_bytes() == b"replaced" and not (dest / "file").is_symlink()
    assert len(got.skipped) == 1 and "pre/secret" in got.skipped[0], got.skipped


def test_set_id_bits_and_group_write_are_dropped(dest):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("tool")
        info.mode, info.size = 0o6777, 2
        tar.addfile(info, io.BytesIO(b"#!"))
    buf.seek(0)
    extract_stream(buf, dest)
    assert (dest / "tool").stat().st_mode & 0o7777 == 0o755


def test_a_member_with_an_impossible_time_is_still_written_and_so_is_the_rest(dest):
    """A machine's tar is not trusted: an mtime of 10**30 raised OverflowError and dropped the rest
    of that node's outputs, leaving a file half written."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mtime in (("ok1", 1_700_000_000), ("odd", 10 ** 30), ("ok2", 1_700_000_000)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = 2, mtime
            tar.addfile(info, io.BytesIO(b"hi"))
    buf.seek(0)
    extract_stream(buf, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["odd", "ok1", "ok2"]
    assert (dest / "odd").read_bytes() == b"hi" and int((dest / "ok2").stat().st_mtime) == 1_700_000_000


def _names(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))


def test_a_stream_cut_short_leaves_no_truncated_file_under_its_name(dest):
    """A transfer cut mid-file (a spot reclaim, the link gone) used to leave the checkpoint under
    its real name, truncated: the run was recorded as succeeded and its snapshot held it."""
    from fleet.safe_extract import Extracted
    whole = _tar([("file", "metrics.json", b'{"loss": 1}'), ("file", "ckpt/model.ckpt", os.urandom(3 << 20))])
    cut = io.BytesIO(whole.getvalue()[:2 << 20])
    got = Extracted()
    with pytest.raises(tarfile.ReadError):
        extract_stream(cut, dest, out=got)
    assert _names(dest) == ["ckpt", "metrics.json"], _names(dest)   # no model.ckpt, no temporary file
    assert (dest / "metrics.json").read_bytes() == b'{"loss": 1}'
    assert got.files == 1


def test_past_the_limit_the_stream_stops_at_the_file_that_crosses_it(dest):
    from fleet.safe_extract import Extracted, Stopped
    got = Extracted()
    stream = _tar([("file", "small", b"x" * 1000), ("file", "big", b"y" * 10_000), ("file", "after", b"z")])
    with pytest.raises(Stopped, match=r"^big: the outputs pass their limit of 4\.9 KiB here \(10\.7 KiB"):
        extract_stream(stream, dest, limit=5000, out=got)
    assert _names(dest) == ["small"] and got.files == 1 and got.bytes == 1000


def test_sparse_files_stay_sparse(dest, tmp_path):
    """A preallocated 256 MiB file holding 5 bytes took 256 MiB here (3 GiB for a 3 GiB one)."""
    import shutil
    import subprocess
    if shutil.which("tar") is None:
        pytest.skip("no tar here")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.bin", "wb") as fh:
        fh.truncate(256 << 20)
        fh.seek(100 << 20)
        fh.write(b"hello")
    (src / "zeros.bin").write_bytes(bytes(8 << 20))   # zeros sent as data (a tar without --sparse)
    for flags in (["--sparse"], []):
        packed = subprocess.run(["tar", *flags, "-cf", "-", "-C", str(src), "."], capture_output=True, check=True)
        out = dest / ("sparse" if flags else "plain")
        extract_stream(io.BytesIO(packed.stdout), out)
        sparse = out / "sparse.bin"
        assert sparse.stat().st_size == 256 << 20
        with open(sparse, "rb") as fh:
            fh.seek(100 << 20)
            assert fh.read(5) == b"hello"
        for name in ("sparse.bin", "zeros.bin"):
            assert (out / name).stat().st_blocks * 512 <= 2 << 20, (flags, name, (out / name).stat().st_blocks)
        assert (out / "zeros.bin").read_bytes() == bytes(8 << 20)


class _Endless:
    """A header block, then zeros for as long as anyone reads; counts what was read."""

    def __init__(self, header: bytes, most: int = 64 << 20):
        self.data, self.read_bytes, self.most = header, 0, most

    def read(self, n: int = -1) -> bytes:
        n = min(n if n >= 0 else self.most, self.most - self.read_bytes)
        head, self.data = self.data[:n], self.data[n:]
        out = head + bytes(n - len(head))
        self.read_bytes += len(out)
        return out


@pytest.mark.parametrize("kind, fmt, what", [(tarfile.XHDTYPE, tarfile.USTAR_FORMAT, "pax"),
                                             (tarfile.XGLTYPE, tarfile.USTAR_FORMAT, "pax global"),
                                             (tarfile.GNUTYPE_LONGNAME, tarfile.GNU_FORMAT, "long name"),
                                             (tarfile.GNUTYPE_LONGLINK, tarfile.GNU_FORMAT, "long link name")])
def test_a_huge_extended_header_is_refused_before_it_is_read(dest, kind, fmt, what):
    """tarfile reads a pax or long-name header whole, then copies it: a machine announcing a 1 GiB
    one made the controller allocate 2 GiB before failing."""
    from fleet.safe_extract import Stopped
    info = tarfile.TarInfo("././@PaxHeader" if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE) else "././@LongLink")
    info.type, info.size = kind, 1 << 30
    stream = _Endless(info.tobuf(format=fmt))
    with pytest.raises(Stopped, match=rf"^a {what} header of 1073741824 bytes \(more than 4 MiB\)"):
        extract_stream(stream, dest)
    assert stream.read_bytes <= 4 << 20, stream.read_bytes


def test_a_usual_pax_header_still_works(dest):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("d/" + "ü" * 120, "d/" + "ü" * 200):   # 240 bytes, then 400: too long for a name
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = 2, {"comment": "c" * 10_000}
            tar.addfile(info, io.BytesIO(b"ok"))
    buf.seek(0)
    got = extract_stream(buf, dest)
    assert got.files == 1 and (dest / "d" / ("ü" * 120)).read_bytes() == b"ok"
    assert got.skipped == [f"d/{'ü' * 200}: name too long for the filesystem here"]


@pytest.mark.parametrize("cut", ["limit", "stream"])
def test_symlinks_before_a_cut_are_kept_and_judged(dest, tmp_path, cut):
    """Symlinks are made after the files; a stream stopped by the limit or cut short used to drop
    every symlink received before it, neither made nor named."""
    from fleet.safe_extract import Extracted, Stopped
    whole = _tar([("file", "a.txt", b"a"), ("sym", "link", "a.txt"), ("sym", "out", "../../outside"),
                  ("file", "big", os.urandom(2 << 20))])
    got = Extracted()
    if cut == "limit":
        with pytest.raises(Stopped):
            extract_stream(whole, dest, limit=1 << 20, out=got)
    else:
        with pytest.raises(tarfile.ReadError):
            extract_stream(io.BytesIO(whole.getvalue()[:1 << 20]), dest, out=got)
    assert _names(dest) == ["a.txt", "link"] and os.readlink(dest / "link") == "a.txt"
    assert got.symlinks == 1 and got.skipped == ["out: symlink to '../../outside' leads outside the output directory"]
    _untouched(tmp_path)


def test_a_symlink_that_cannot_be_made_still_has_the_others_judged(dest, tmp_path):
    """A symlink whose name the filesystem refuses used to end the extraction before any link was
    judged, leaving one that leads outside in place."""
    got = extract_stream(_tar([("sym", "out", "../../outside"), ("sym", "x" * 300, "a")]), dest)
    assert _names(dest) == [] and got.symlinks == 0
    assert got.skipped == [f"{'x' * 300}: name too long for the filesystem here",
                           "out: symlink to '../../outside' leads outside the output directory"]


def test_a_hard_link_copied_counts_against_the_limit(dest, monkeypatch):
    """Where the filesystem refuses a link (EMLINK past ~65,000 links), the copy used to be free of
    the limit: one big file and many links to it filled the disk."""
    import errno
    from fleet.safe_extract import Extracted, Stopped

    def refuse(*args, **kwargs):
        raise OSError(errno.EMLINK, "Too many links")

    monkeypatch.setattr(os, "link", refuse)
    got = Extracted()
    stream = _tar([("file", "big", b"y" * 3000), ("hard", "copy1", "big"), ("hard", "copy2", "big")])
    with pytest.raises(Stopped, match=r"^copy2: the outputs pass their limit of 7\.8 KiB here \(8\.8 KiB"):
        extract_stream(stream, dest, limit=8000, out=got)
    assert _names(dest) == ["big", "copy1"] and got.bytes == 6000 and got.hardlinks == 1
    assert (dest / "copy1").read_bytes() == b"y" * 3000


def test_temporary_files_of_a_killed_extraction_are_removed_and_never_accepted(dest):
    """A controller killed mid-file leaves its temporary file; the next extraction into the same
    directory (a collect retried) removes it, and a member may not take such a name."""
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / ".fleet-part-0123456789abcdef").write_bytes(b"half")
    (dest / "kept").write_bytes(b"k")
    got = extract_stream(_tar([("file", ".fleet-part-00", b"x"), ("file", "a", b"a")]), dest)
    assert _names(dest) == ["a", "kept", "sub"]
    assert got.skipped == [".fleet-part-00: a name starting '.fleet-part-' is kept for files being written"]


def test_a_dest_holding_a_tree_deeper_than_the_stack_is_extracted_into_and_its_partials_removed(dest):
    """A dest that already holds a run's tree deeper than Python's stack (outputs fetched again into
    it): the sweep for a killed extraction's temporary files walked it with os.walk, which recursed
    once per level before Python 3.12, so the fetch died on RecursionError before a byte came in."""
    from fleet.safe_extract import PARTIAL_PREFIX
    from tests.fixtures.deep_tree import DEPTH, deep_tree, remove
    deep_tree(dest / "sub")
    bottom = (dest / "sub").joinpath(*["d"] * DEPTH)
    (bottom / f"{PARTIAL_PREFIX}killed").write_text("half")
    try:
        got = extract_stream(_tar([("file", "metrics.json", b'{"loss": 1}')]), dest)
        assert got.files == 1 and (dest / "metrics.json").read_bytes() == b'{"loss": 1}'
        assert sorted(p.name for p in bottom.iterdir()) == ["left-by-the-job"]
    finally:
        remove(dest)
