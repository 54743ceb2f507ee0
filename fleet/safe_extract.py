"""Unpack a tar stream a machine sent home (its outputs), treating the machine as hostile.

The machine controls every byte of the stream, so nothing in it may write outside `dest`:
- member paths are relative, without `..`, and every directory on the way is walked with
  O_NOFOLLOW|O_DIRECTORY from an open directory (openat-style): a symlink in a parent is refused,
  never followed, even one that existed before (tarfile's `filter="data"` resolves paths with
  os.path.realpath, which on Python < 3.11.13 can be tricked with over-long link chains);
- files are created O_EXCL|O_NOFOLLOW after removing what was there, so no member writes
  through a symlink an earlier member planted;
- symlinks are created only after every file and directory (so none is ever a path component
  during extraction; also when the stream stops early), then each is resolved link by link; one
  that leads outside `dest`, or through an absolute target, is removed again and reported;
- a hard link may only name a regular file this same stream wrote; it becomes a hard link
  (a copy where the filesystem refuses links, counted against `limit`);
- devices, fifos and other special members are skipped.
Everything skipped is reported by path and reason, never silently dropped. Memory stays bounded:
members are streamed in 1 MiB pieces (tarfile's stream mode reads the tar once, in order), and a
long-name or pax header is refused past MAX_HEADER before tarfile reads it whole into memory.
Each file is written under a temporary name beside it and renamed into place only once complete, so
a stream cut short never leaves a truncated file under the real name; runs of zeros become holes
(a sparse checkpoint stays sparse here); `limit` bounds the bytes one stream may write. Temporary
files an extraction killed part way left in `dest` are removed by the next one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
MAX_LINK_HOPS = 40
# The largest long-name (GNU L/K) or pax (x/g) header accepted: tarfile reads one whole into memory,
# twice over, so a hostile 1 GiB header cost 2 GiB here. Real ones hold a path and a few keywords.
MAX_HEADER = 4 << 20
_ZEROS = bytes(CHUNK)
# Files being written are named so (fixed length: a member's own name may be as long as the filesystem
# allows); members named so are refused, so none of these is ever an output.
PARTIAL_PREFIX = ".fleet-part-"
_HEADER_TYPES = {tarfile.GNUTYPE_LONGNAME: "long name", tarfile.GNUTYPE_LONGLINK: "long link name",
                 tarfile.XHDTYPE: "pax", tarfile.XGLTYPE: "pax global", tarfile.SOLARIS_XHDTYPE: "pax"}


@dataclass
class Extracted:
    files: int = 0            # regular files, hard links included
    symlinks: int = 0
    hardlinks: int = 0
    dirs: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)   # "path: why", one per member not extracted
    incomplete: str | None = None   # why the rest of the stream did not come home (None: it all did)


class _Refused(Exception):
    """This member cannot be extracted safely; the message says why."""


class Stopped(Exception):
    """The rest of the stream is refused (a header too large, the outputs past their limit); the
    message names the member where it stopped. What came before it is kept."""


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses an over-long header member before tarfile reads it into memory."""

    def _proc_member(self, tarfile_):
        kind = _HEADER_TYPES.get(self.type)
        if kind is not None and self.size > MAX_HEADER:
            raise Stopped(f"a {kind} header of {self.size} bytes (more than {MAX_HEADER >> 20} MiB) at byte "
                          f"{self.offset} of the stream: refused, and the rest of the stream with it")
        return super()._proc_member(tarfile_)


def _rel_parts(name: str) -> list[str]:
    """The member's path as components inside dest; refuses absolute paths and `..`."""
    if name.startswith("/") or "\x00" in name:
        raise _Refused("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _Refused("path leaves the output directory")
    if any(p.startswith(PARTIAL_PREFIX) for p in parts):
        raise _Refused(f"a name starting {PARTIAL_PREFIX!r} is kept for files being written")
    return parts


def _open_dir(root_fd: int, parts: list[str], create: bool) -> int:
    """An fd of dest/parts, each component opened without following symlinks (created if asked)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Refused(f"{part!r} on its path is a symlink or a file, not a directory") from None
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _clear(dir_fd: int, name: str) -> None:
    """Remove a non-directory entry about to be replaced (never follow it)."""
    if _not_a_dir(dir_fd, name):
        os.unlink(name, dir_fd=dir_fd)


def _mode(member: tarfile.TarInfo, base: int) -> int:
    """Permission bits only, never set-id or sticky, never writable by others; owner can read/write."""
    return (member.mode & 0o755) | base


def _not_a_dir(dir_fd: int, name: str) -> bool:
    """Refuse replacing a directory with a file (a file or symlink there is replaced by rename);
    whether there is an entry of that name."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise _Refused("a directory of that name exists")
    return True


def _temp_name() -> str:
    return f"{PARTIAL_PREFIX}{secrets.token_hex(8)}"


def _commit(parent: int, tmp: str, name: str, ok: bool) -> None:
    """The complete file under its name (atomically: never through a symlink there), or gone."""
    if ok:
        os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    else:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=parent)


def _write_file(root_fd: int, parts: list[str], member: tarfile.TarInfo, src: BinaryIO | None) -> int:
    parent = _open_dir(root_fd, parts[:-1], create=True)
    written, ok = 0, False
    try:
        _not_a_dir(parent, parts[-1])
        tmp = _temp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        try:
            while src is not None:
                block = src.read(CHUNK)
                if not block:
                    break
                written += len(block)
                if block == _ZEROS[:len(block)]:   # a hole (sparse tar) or zeros: left unwritten
                    os.lseek(fd, len(block), os.SEEK_CUR)
                    continue
                view = memoryview(block)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            os.ftruncate(fd, written)   # a trailing hole still counts in the file's size
            os.fchmod(fd, _mode(member, 0o600))
            with contextlib.suppress(OverflowError, ValueError, OSError):   # the machine's word: 10**30 is no time
                os.utime(fd, (member.mtime, member.mtime))
            ok = True
        finally:
            os.close(fd)
            _commit(parent, tmp, parts[-1], ok)
    finally:
        os.close(parent)
    return written


def _link_file(root_fd: int, parts: list[str], target: list[str], room: tuple[str, int, int] | None) -> int:
    """A hard link to a file this stream wrote; a copy where links are refused (EMLINK past ~65,000
    links on ext4), which counts against the limit like any file: `room` is (member name, limit,
    bytes so far), None without a limit. Returns the bytes copied (0 for a link)."""
    src_parent = _open_dir(root_fd, target[:-1], create=False)
    dst_parent = _open_dir(root_fd, parts[:-1], create=True)
    try:
        _clear(dst_parent, parts[-1])
        try:
            os.link(target[-1], parts[-1], src_dir_fd=src_parent, dst_dir_fd=dst_parent, follow_symlinks=False)
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
        src = os.open(target[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_parent)
        tmp, ok = _temp_name(), False
        try:
            st = os.fstat(src)
            if room is not None and room[2] + st.st_size > room[1]:
                raise _past_limit(room[0], room[1], room[2] + st.st_size)
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          st.st_mode & 0o777, dir_fd=dst_parent)
            try:
                while block := os.read(src, CHUNK):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(dst, view):]
                ok = True
            finally:
                os.close(dst)
                _commit(dst_parent, tmp, parts[-1], ok)
            return st.st_size
        finally:
            os.close(src)
    finally:
        os.close(src_parent)
        os.close(dst_parent)


def _resolves_inside(root: str, parts: list[str]) -> bool:
    """Follow dest/parts link by link, as the kernel would, without leaving dest: False when any
    step goes above dest, through an absolute target, or takes too many hops."""
    pending, inside, hops = list(parts), [], 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not inside:
                return False
            inside.pop()
            continue
        path = os.path.join(root, *inside, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            inside.append(part)   # dangling from here on: judged by its path alone
            continue
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            target = os.readlink(path)
            if hops > MAX_LINK_HOPS or target.startswith("/"):
                return False
            pending = target.split("/") + pending
        else:
            inside.append(part)
    return True


def _past_limit(name: str, limit: int, total: int) -> Stopped:
    from .render.units import human_size
    return Stopped(f"{name}: the outputs pass their limit of {human_size(limit)} here "
                   f"({human_size(total)} with this file)")


def _extract_members(stream: BinaryIO, root_fd: int, limit: int | None, out: Extracted,
                     files: set[tuple[str, ...]], symlinks: dict[tuple[str, ...], tuple[str, str]]) -> None:
    """Every member but symlinks, in stream order; symlinks are collected for _make_symlinks."""
    with tarfile.open(fileobj=stream, mode="r|*", bufsize=CHUNK, tarinfo=_BoundedTarInfo) as tar:
        for member in tar:
            try:
                parts = _rel_parts(member.name)
                if not parts:
                    continue   # the archive's own "./"
                # As in any tar, a later member of the same path replaces an earlier one.
                symlinks.pop(tuple(parts), None)
                if member.isdir():
                    os.close(_open_dir(root_fd, parts, create=True))
                    out.dirs += 1
                elif member.isreg():
                    if limit is not None and out.bytes + member.size > limit:
                        raise _past_limit(member.name, limit, out.bytes + member.size)
                    out.bytes += _write_file(root_fd, parts, member, tar.extractfile(member))
                    files.add(tuple(parts))
                    out.files += 1
                elif member.issym():
                    symlinks[tuple(parts)] = (member.name, member.linkname)
                elif member.islnk():
                    target = _rel_parts(member.linkname)
                    if tuple(target) not in files:
                        raise _Refused(f"hard link to {member.linkname!r}, not a file of these outputs")
                    room = None if limit is None else (member.name, limit, out.bytes)
                    out.bytes += _link_file(root_fd, parts, target, room)
                    files.add(tuple(parts))
                    out.files += 1
                    out.hardlinks += 1
                else:
                    raise _Refused("special file (device, fifo or socket)")
            except _Refused as exc:
                out.skipped.append(f"{member.name}: {exc}")
            except OSError as exc:   # a name this filesystem cannot hold is that member's problem only
                if exc.errno != errno.ENAMETOOLONG:
                    raise
                out.skipped.append(f"{member.name}: name too long for the filesystem here")


def _make_symlinks(root: str, root_fd: int, symlinks: dict[tuple[str, ...], tuple[str, str]],
                   out: Extracted) -> OSError | None:
    """Make the collected symlinks, then remove and name each that leads outside dest. One that
    cannot be made is named in `skipped`; the first such failure other than a name too long (a
    full disk) is returned, for the caller to raise once every link made has been judged."""
    made, failed = [], None
    for key, (name, target) in symlinks.items():
        parts = list(key)
        try:
            if target.startswith("/"):
                raise _Refused(f"symlink to the absolute path {target!r}")
            parent = _open_dir(root_fd, parts[:-1], create=True)
            try:
                _clear(parent, parts[-1])
                os.symlink(target, parts[-1], dir_fd=parent)
            finally:
                os.close(parent)
            made.append((parts, name, target))
            out.symlinks += 1
        except _Refused as exc:
            out.skipped.append(f"{name}: {exc}")
        except OSError as exc:
            out.skipped.append(f"{name}: " + ("name too long for the filesystem here"
                                              if exc.errno == errno.ENAMETOOLONG else f"not made ({exc.strerror or exc})"))
            if exc.errno != errno.ENAMETOOLONG and failed is None:
                failed = exc
    # Judged once all exist: one link can make another lead elsewhere (a -> ., b -> a/..).
    for parts, name, target in made:
        if not os.path.islink(os.path.join(root, *parts)) or _resolves_inside(root, parts):
            continue
        parent = _open_dir(root_fd, parts[:-1], create=False)
        try:
            os.unlink(parts[-1], dir_fd=parent)
        finally:
            os.close(parent)
        out.symlinks -= 1
        out.skipped.append(f"{name}: symlink to {target!r} leads outside the output directory")
    return failed


def _remove_partials(root: str) -> None:
    """Temporary files an extraction killed part way (the controller SIGKILLed) left behind. Not
    os.walk: before Python 3.12 it recurses once per level, and a run's tree can be deeper."""
    todo = [root]
    while todo:
        with contextlib.suppress(OSError), os.scandir(todo.pop()) as it:
            for e in list(it):
                if e.name.startswith(PARTIAL_PREFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)
                if e.is_dir(follow_symlinks=False):
                    todo.append(e.path)


def extract_stream(stream: BinaryIO, dest: Path, *, limit: int | None = None,
                   out: Extracted | None = None) -> Extracted:
    """Unpack the tar (any compression tarfile detects) read from `stream` into `dest`, at most
    `limit` bytes of files (their full size, holes included). Raises Stopped past the limit or at
    an over-long header, tarfile.ReadError at a stream cut short, OSError (a full disk): what came
    before stays in `out` (pass one to read it then) and on disk, every file there complete."""
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    _remove_partials(root)   # never more than one extraction into a dest at a time
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    out = Extracted() if out is None else out
    files: set[tuple[str, ...]] = set()                # regular files this stream wrote
    symlinks: dict[tuple[str, ...], tuple[str, str]] = {}   # parts -> (name, target), made last
    try:
        try:
            _extract_members(stream, root_fd, limit, out, files, symlinks)
        except Exception:
            # What came before the cut is kept, its symlinks included (each made, judged or named).
            _make_symlinks(root, root_fd, symlinks, out)
            raise
        failed = _make_symlinks(root, root_fd, symlinks, out)
        if failed is not None:
            raise failed
    finally:
        os.close(root_fd)
    return out
