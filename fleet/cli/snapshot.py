"""`fleet snapshot create/ls/show/diff/verify/rm/gc`: content-addressed data snapshots."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..render.units import human_size

snapshot_app = typer.Typer(help="Content-addressed snapshots of data (same bytes → same id).",
                           no_args_is_help=True)

StoreOpt = typer.Option(None, "--store", help="Store URL (path or s3://bucket/prefix). Default: fleet.toml's "
                        "`store`, else $FLEET_HOME/store.")


def register(app: typer.Typer) -> None:
    app.add_typer(snapshot_app, name="snapshot")


def _store(url: str | None):
    from ..snapshots import open_store
    if url is None:   # fleet.toml's `store`, if any (a broken file is not this command's concern)
        from ..config.peek import peek_str
        url = peek_str("store") or None
    return open_store(url)


PLAIN_EVERY_S = 5.0


def _rate(n: float) -> str:
    return f"{n / 1e6:.0f} MB/s"


def _is_ci() -> bool:
    from .render import is_ci        # rich comes with it: only asked when a bar could be drawn
    return is_ci()


class CreateProgress:
    """What `snapshot create` shows while it hashes: a rich bar on a terminal; without one (a pipe,
    CI=true) a plain line every PLAIN_EVERY_S seconds; always a closing line on stderr."""

    def __init__(self, quiet: bool):
        import sys
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
        typer.echo(f"fleet: snapshot: {human_size(p.bytes_done)} of {human_size(p.bytes_total)} ({pct:.0f}%), {files}, "
                   f"hashing {_rate(p.hash_rate)}", err=True)


@snapshot_app.command("create")
def create(
    path: Path = typer.Argument(..., help="Directory or file to snapshot."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Name for the snapshot (must not point elsewhere)."),
    store: Optional[str] = StoreOpt,
    json_out: bool = typer.Option(False, "--json"),
) -> int:
    """Snapshot PATH into the store and print its id."""
    import time

    from ..snapshots import create_snapshot
    st = _store(store)
    t0 = time.monotonic()
    with CreateProgress(quiet=json_out) as progress:
        result = create_snapshot(path, st, name=name, progress=progress)
    seconds = time.monotonic() - t0
    for w in result.warnings:
        typer.echo(f"fleet: warning: {w}", err=True)
    if json_out:
        import sys

        from ..render.data import json_text      # not cli.render: no rich for a JSON answer
        sys.stdout.write(json_text({"id": result.id, "name": name, "files": len(result.manifest.files()),
                    "size": result.manifest.total_size, "new_chunks": result.new_chunks,
                    "new_bytes": result.new_bytes, "bytes_hashed": result.bytes_hashed,
                    "files_unchanged": result.files_cached, "seconds": round(seconds, 3), "store": st.url}))
        sys.stdout.flush()
    else:
        typer.echo(result.id)
        typer.echo(f"{len(result.manifest.files())} files, {human_size(result.manifest.total_size)}; "
                   f"{human_size(result.bytes_hashed)} read and hashed in {seconds:.1f} s "
                   f"({_rate(result.bytes_hashed / seconds if seconds > 0 else 0)}), "
                   f"{result.files_cached} files unchanged since the last snapshot; "
                   f"{result.new_chunks} new chunks ({human_size(result.new_bytes)}) stored in {st.url}", err=True)
    return 0


@snapshot_app.command("ls")
def ls(store: Optional[str] = StoreOpt, json_out: bool = typer.Option(False, "--json")) -> int:
    """List snapshots in the store."""
    from ..snapshots import list_snapshots
    rows = list_snapshots(_store(store))
    if json_out:
        from .render import print_json
        print_json({"snapshots": rows})
        return 0
    from ..snapshots.catalog import snapshots_table
    from .render import print_table
    print_table(snapshots_table(rows))
    return 0


@snapshot_app.command("show")
def show(ref: str = typer.Argument(..., help="Snapshot id, id prefix or name."), store: Optional[str] = StoreOpt,
         json_out: bool = typer.Option(False, "--json")) -> int:
    """Show a snapshot's files."""
    from ..snapshots import resolve
    from ..snapshots import show as show_snapshot
    st = _store(store)
    info = show_snapshot(st, resolve(st, ref))
    if json_out:
        from .render import print_json
        print_json(info)
        return 0
    typer.echo(f"snapshot {info['id']}")
    if info["names"]:
        typer.echo(f"names:   {', '.join(info['names'])}")
    typer.echo(f"files:   {info['files']} ({human_size(info['size'])}, {info['chunks']} chunks)")
    for path in info["deleted"]:
        typer.echo(f"  deleted  {path}")
    for e in info["entries"]:
        if e["type"] == "file":
            typer.echo(f"  {e['mode']:o}  {human_size(e['size']):>10}  {e['sha256'][:12]}  {e['path']}")
        elif e["type"] == "symlink":
            typer.echo(f"  link  {e['path']} -> {e['target']}")
    return 0


@snapshot_app.command("diff")
def diff(a: str, b: str, store: Optional[str] = StoreOpt, json_out: bool = typer.Option(False, "--json")) -> int:
    """What changed from snapshot A to snapshot B."""
    from ..snapshots import diff as diff_snapshots
    from ..snapshots import resolve
    st = _store(store)
    d = diff_snapshots(st, resolve(st, a), resolve(st, b))
    if json_out:
        from .render import print_json
        print_json(d.to_json())
        return 0
    for p in d.added:
        typer.echo(f"+ {p}")
    for p in d.removed:
        typer.echo(f"- {p}")
    for p in d.changed:
        typer.echo(f"M {p}")
    typer.echo(f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed, {d.unchanged} unchanged; "
               f"{human_size(d.new_bytes)} new, {human_size(d.shared_bytes)} shared", err=True)
    return 0


@snapshot_app.command("verify")
def verify(ref: Optional[str] = typer.Argument(None, help="Snapshot to check (default: every snapshot)."),
           store: Optional[str] = StoreOpt,
           quick: bool = typer.Option(False, "--quick", help="Check chunks are present without re-hashing them."),
           json_out: bool = typer.Option(False, "--json")) -> int:
    """Re-hash every chunk; name each missing or corrupt chunk and its file."""
    from ..errors import IntegrityError
    from ..snapshots import resolve
    from ..snapshots import verify as verify_snapshot
    st = _store(store)
    ids = [resolve(st, ref)] if ref else [m.id for m in st.list_manifests()]
    problems = {sid: verify_snapshot(st, sid, deep=not quick) for sid in ids}
    bad = {k: v for k, v in problems.items() if v}
    if json_out:
        from .render import print_json
        print_json({"checked": len(ids), "ok": not bad, "problems": bad})
    else:
        for plist in bad.values():
            for p in plist:
                typer.echo(p, err=True)
        if not bad:
            typer.echo(f"{len(ids)} snapshot(s) verified, every chunk present and intact")
    if bad:
        first = next(iter(bad.values()))
        total = sum(len(v) for v in bad.values())
        raise IntegrityError(first[0] + (f" (+{total - 1} more)" if total > 1 else ""))
    return 0


@snapshot_app.command("rm")
def rm(ref: str = typer.Argument(..., help="Snapshot name, id or id prefix."), store: Optional[str] = StoreOpt,
       json_out: bool = typer.Option(False, "--json")) -> int:
    """Drop a snapshot's name (an id drops all its names). Run `gc` later to free its chunks; snapshots
    a run record references are never deleted, so `fleet rerun` stays possible."""
    from ..records.chain import runs_referencing
    from ..snapshots.catalog import remove
    result = remove(_store(store), ref, runs_referencing)
    if json_out:
        from .render import print_json
        print_json(result)
        return 0
    sid = result["id"][:12]
    if result["names_removed"]:
        typer.echo(f"removed name(s) {', '.join(result['names_removed'])} of snapshot {sid}")
    if result["manifest_removed"]:
        typer.echo(f"snapshot {sid} removed; `fleet snapshot gc` frees its chunks")
    elif result["kept_for_runs"]:
        runs = result["kept_for_runs"]
        typer.echo(f"snapshot {sid} kept: run record(s) {', '.join(runs[:5])}{' …' if len(runs) > 5 else ''} "
                   "reference it", err=True)
    elif result["names_left"]:
        typer.echo(f"snapshot {sid} kept: still named {', '.join(result['names_left'])}", err=True)
    return 0


@snapshot_app.command("gc")
def gc(store: Optional[str] = StoreOpt,
       grace: float = typer.Option(3600, "--grace", help="Keep unreferenced chunks younger than this (seconds): "
                                   "a create in progress has written chunks but not yet its manifest."),
       dry_run: bool = typer.Option(False, "--dry-run"), json_out: bool = typer.Option(False, "--json")) -> int:
    """Delete chunks that no snapshot references."""
    from ..snapshots import gc as gc_store
    result = gc_store(_store(store), grace_s=grace, dry_run=dry_run)
    if json_out:
        from .render import print_json
        print_json(result)
    else:
        verb = "would delete" if dry_run else "deleted"
        typer.echo(f"{verb} {result['deleted_chunks']} unreferenced chunks; {result['live_chunks']} live")
    return 0
