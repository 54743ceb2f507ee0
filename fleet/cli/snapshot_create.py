"""`fleet snapshot create`: what it shows while hashing and what it prints, without typer.

An unchanged tree is re-snapshotted in a few tens of milliseconds, so typer's and click's imports
(about 40 ms) would be most of the command: fleet/cli/main.py sends the plain forms here directly
(`fast_args`), and the typer command in fleet/cli/snapshot.py calls the same `create` for the rest
(tests/unit/test_snapshot_cli_fast.py keeps both routes identical).
"""
from __future__ import annotations

import os
import sys

PLAIN_EVERY_S = 5.0
# The options the typer command declares, and the keyword each fills; anything else goes through typer.
VALUE_OPTIONS = {"--name": "name", "-n": "name", "--store": "store"}
FLAG_OPTIONS = {"--json": "json_out"}


def fast_args(args: list[str]) -> dict | None:
    """`snapshot create PATH [--name N | -n N] [--store S] [--json]` as create()'s keywords; None for
    anything else (help, typos, repeated options, a second path, `--opt=value`): typer answers those."""
    if args[:2] != ["snapshot", "create"]:
        return None
    out: dict = {"path": None, "name": None, "store": None, "json_out": False}
    seen: set[str] = set()
    rest = args[2:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in VALUE_OPTIONS and i + 1 < len(rest) and not rest[i + 1].startswith("-"):
            key = VALUE_OPTIONS[arg]
            if key in seen:
                return None
            seen.add(key)
            out[key] = rest[i + 1]
            i += 2
        elif arg in FLAG_OPTIONS and FLAG_OPTIONS[arg] not in seen:
            seen.add(FLAG_OPTIONS[arg])
            out[FLAG_OPTIONS[arg]] = True
            i += 1
        elif not arg.startswith("-") and arg and out["path"] is None:
            out["path"] = arg
            i += 1
        else:
            return None
    return out if out["path"] is not None else None


def _size(n: float) -> str:
    from ..render.units import human_size
    return human_size(n)


def _rate(n: float) -> str:
    return f"{n / 1e6:.0f} MB/s"


def _is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("GITHUB_ACTIONS") == "true"


class CreateProgress:
    """What `snapshot create` shows while it hashes: a rich bar on a terminal; without one (a pipe,
    CI=true) a plain line every PLAIN_EVERY_S seconds; always a closing line on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty() and not _is_ci()
        self._bar = self._task = None
        self._last_line = 0.0

    def __enter__(self) -> "CreateProgress":
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
            self._bar = Progress(TextColumn("snapshot"), BarColumn(), DownloadColumn(binary_units=True),
                                 TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[files]}"),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("snapshot", total=None, rate="", files="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, p) -> None:
        if self.quiet:
            return
        files = f"{p.files_done:,}/{p.files_total:,} files"
        if self._bar is not None:
            self._bar.update(self._task, total=p.bytes_total, completed=p.bytes_done, files=files,
                             rate=f"hashing {_rate(p.hash_rate)}" if p.bytes_hashed else "")
            return
        if p.finished or p.elapsed_s - self._last_line < PLAIN_EVERY_S:
            return
        self._last_line = p.elapsed_s
        pct = 100 * p.bytes_done / p.bytes_total if p.bytes_total else 100
        _err(f"fleet: snapshot: {_size(p.bytes_done)} of {_size(p.bytes_total)} ({pct:.0f}%), {files}, "
             f"hashing {_rate(p.hash_rate)}")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def check_store_option(url: str | None) -> None:
    """`--store ""` (`--store "$STORE"` with STORE unset) is refused: open_store reads "" as the
    default store, so ls, rm or gc acted on $FLEET_HOME/store instead of the store meant."""
    if url is not None and not url.strip():
        from ..errors import UsageError
        raise UsageError("--store is empty", hint="give a store path or s3://bucket/prefix, or leave --store out "
                                                  "for fleet.toml's store (else $FLEET_HOME/store)")


def _open_store(url: str | None):
    from ..snapshots.store import open_store
    check_store_option(url)
    if url is None:   # fleet.toml's `store`, if any (a file that does not parse is refused: store_url)
        from ..config.peek import store_url
        url = store_url()
    return open_store(url)


def create(path: str, name: str | None = None, store: str | None = None, json_out: bool = False) -> int:
    """Snapshot PATH into the store and print its id (--json: the whole result)."""
    import time

    from ..snapshots.create import create_snapshot
    if not path:   # Path("") is ".": `snapshot create "$DATA"` with DATA unset took the whole cwd
        from ..errors import UsageError
        raise UsageError("no path to snapshot (an empty string)", hint="name a file or directory; `.` for here")
    if name is not None:
        from ..snapshots.store import check_user_name
        check_user_name(name)
    st = _open_store(store)
    t0 = time.monotonic()
    with CreateProgress(quiet=json_out) as progress:
        result = create_snapshot(path, st, name=name, progress=progress)
    seconds = time.monotonic() - t0
    if result.warnings:   # a warning names a file: whatever the tree held, ESC sequences and line breaks
        from ..render.text import printable_line
        for w in result.warnings:
            _err(f"fleet: warning: {printable_line(w)}")
    if json_out:
        import json
        # As render.data.json_text writes it (indented, keys sorted); every value here is plain JSON.
        sys.stdout.write(json.dumps({"id": result.id, "name": name, "files": result.files, "size": result.size,
                                     "new_chunks": result.new_chunks, "new_bytes": result.new_bytes,
                                     "bytes_hashed": result.bytes_hashed, "files_unchanged": result.files_cached,
                                     "seconds": round(seconds, 3), "store": st.url}, indent=2, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        sys.stdout.write(result.id + "\n")
        sys.stdout.flush()
        _err(f"{result.files} files, {_size(result.size)}; "
             f"{_size(result.bytes_hashed)} read and hashed in {seconds:.1f} s "
             f"({_rate(result.bytes_hashed / seconds if seconds > 0 else 0)}), "
             f"{result.files_cached} files unchanged since the last snapshot; "
             f"{result.new_chunks} new chunks ({_size(result.new_bytes)}) stored in {st.url}")
    return 0
