"""`fleet snapshot create/ls/show/diff/verify/rm/gc`: content-addressed data snapshots."""
from __future__ import annotations

from typing import Optional

import typer

JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")

from ..render.units import human_size

snapshot_app = typer.Typer(help="Content-addressed snapshots of data (same bytes → same id).",
                           no_args_is_help=True)

StoreOpt = typer.Option(None, "--store", help="Store URL (path or s3://bucket/prefix). Default: fleet.toml's "
                        "`store`, else $FLEET_HOME/store.")


def register(app: typer.Typer) -> None:
    app.add_typer(snapshot_app, name="snapshot")


def _store(url: str | None):
    """The store a reading command (ls, show, diff, verify, rm, gc) looks in: it must be there already."""
    from ..snapshots import open_store
    from .snapshot_create import check_store_option
    check_store_option(url)
    if url is None:   # fleet.toml's `store`, if any (a file that does not parse is refused: store_url)
        from ..config.peek import store_url
        url = store_url()
    return open_store(url, existing=True)


@snapshot_app.command("create")
def create(
    path: str = typer.Argument(..., help="Directory or file to snapshot."),   # str: typer makes "" Path(".")
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Name for the snapshot (must not point elsewhere)."),
    store: Optional[str] = StoreOpt,
    json_out: bool = JsonOpt,
) -> int:
    """Snapshot PATH into the store and print its id."""
    from .snapshot_create import create as create_command     # also fleet/cli/main.py's route without typer
    return create_command(path, name=name, store=store, json_out=json_out)


@snapshot_app.command("ls")
def ls(store: Optional[str] = StoreOpt, json_out: bool = JsonOpt) -> int:
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
         json_out: bool = JsonOpt) -> int:
    """Show a snapshot's files."""
    from ..snapshots import resolve
    from ..snapshots import show as show_snapshot
    st = _store(store)
    info = show_snapshot(st, resolve(st, ref))
    if json_out:
        from .render import print_json
        print_json(info)
        return 0
    from ..render.text import printable_line as shown   # paths are whatever the tree held: ESC, line breaks
    typer.echo(f"snapshot {info['id']}")
    if info["names"]:
        typer.echo(f"names:   {', '.join(info['names'])}")
    typer.echo(f"files:   {info['files']} ({human_size(info['size'])}, {info['chunks']} chunks)")
    for path in info["deleted"]:
        typer.echo(f"  deleted  {shown(path)}")
    for e in info["entries"]:
        if e["type"] == "file":
            typer.echo(f"  {e['mode']:o}  {human_size(e['size']):>10}  {e['sha256'][:12]}  {shown(e['path'])}")
        elif e["type"] == "symlink":
            typer.echo(f"  link  {shown(e['path'])} -> {shown(e['target'])}")
    return 0


@snapshot_app.command("diff")
def diff(a: str, b: str, store: Optional[str] = StoreOpt, json_out: bool = JsonOpt) -> int:
    """What changed from snapshot A to snapshot B."""
    from ..snapshots import diff as diff_snapshots
    from ..snapshots import resolve
    st = _store(store)
    d = diff_snapshots(st, resolve(st, a), resolve(st, b))
    if json_out:
        from .render import print_json
        print_json(d.to_json())
        return 0
    from ..render.text import printable_line as shown   # paths are whatever the trees held
    for p in d.added:
        typer.echo(f"+ {shown(p)}")
    for p in d.removed:
        typer.echo(f"- {shown(p)}")
    for p in d.changed:
        typer.echo(f"M {shown(p)}")
    typer.echo(f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed, {d.unchanged} unchanged; "
               f"{human_size(d.new_bytes)} new, {human_size(d.shared_bytes)} shared", err=True)
    return 0


@snapshot_app.command("verify")
def verify(ref: Optional[str] = typer.Argument(None, help="Snapshot to check (default: every snapshot)."),
           store: Optional[str] = StoreOpt,
           quick: bool = typer.Option(False, "--quick", help="Check chunks are present without re-hashing them."),
           json_out: bool = JsonOpt) -> int:
    """Re-hash every chunk; name each missing or corrupt chunk and its file."""
    from ..errors import IntegrityError
    from ..snapshots import resolve
    from ..snapshots import verify as verify_snapshot
    st = _store(store)
    ids = [resolve(st, ref)] if ref is not None else [m.id for m in st.list_manifests()]
    problems = {sid: verify_snapshot(st, sid, deep=not quick) for sid in ids}
    bad = {k: v for k, v in problems.items() if v}
    if json_out:
        from .render import print_json
        print_json({"checked": len(ids), "ok": not bad, "problems": bad})
    else:
        from ..render.text import printable_line
        for plist in bad.values():
            for p in plist:
                typer.echo(printable_line(p), err=True)
        if not bad:
            typer.echo(f"{len(ids)} snapshot(s) verified, every chunk present and intact")
    if bad:
        first = next(iter(bad.values()))
        total = sum(len(v) for v in bad.values())
        if not json_out:     # each problem is on stderr already: the error sums them up
            raise IntegrityError(f"{total} problem(s) in {len(bad)} of {len(ids)} snapshot(s)")
        raise IntegrityError(first[0] + (f" (+{total - 1} more)" if total > 1 else ""))
    return 0


@snapshot_app.command("rm")
def rm(ref: str = typer.Argument(..., help="Snapshot name, id or id prefix."), store: Optional[str] = StoreOpt,
       json_out: bool = JsonOpt) -> int:
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
       dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would go."),
       json_out: bool = JsonOpt) -> int:
    """Delete chunks that no snapshot references (refused while a write to the store is under way)."""
    from ..snapshots import gc as gc_store
    result = gc_store(_store(store), grace_s=grace, dry_run=dry_run)
    if json_out:
        from .render import print_json
        print_json(result)
    else:
        verb = "would delete" if dry_run else "deleted"
        typer.echo(f"{verb} {result['deleted_chunks']} unreferenced chunks; {result['live_chunks']} live")
    return 0
