"""Checkpoints: `FLEET_CHECKPOINT_DIR` on every machine, kept in the run's store as snapshots.

The experiment writes its checkpoint into `$FLEET_CHECKPOINT_DIR` (best: write a temporary file,
then rename it). fleet uploads that directory as a content-addressed snapshot: every `checkpoint_interval`
while the command runs, once more when the command has ended (also after the SIGTERM of a stop:
the experiment writes its last checkpoint on SIGTERM, then exits), and on an interruption notice.
Only chunks the store lacks cross the network (fleet/remote/checkpoint_helper.py cuts and hashes
on the machine). Each node's latest checkpoint is the store ref `ckpt-<run>-n<rank>` and the
run's state meta (`checkpoints`); a resumed attempt gets it restored into the same directory
before setup and command start, and sees FLEET_RESUMED=1 and FLEET_ATTEMPT=N.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import FleetError, IntegrityError, MachineUnreachable
from ..models import Lease, Machine
from ..snapshots.store import MAX_CHUNK_BYTES

HEADER = 77   # 64 hex id + 12 digit length + newline
MAX_HEAD = 256 * 1024 * 1024    # the machine's listing line: a checkpoint of a very large tree fits


def checkpoint_dir(machine: Machine, run_id: str) -> str:
    """The run's own directory: a kept lease or a sweep's pool runs many runs on one machine, and
    none may find another's checkpoint and take it for its own."""
    return f"{machine.workdir}/checkpoints/{run_id}"


def ref_name(run_id: str, node_rank: int) -> str:
    return f"ckpt-{run_id}-n{node_rank}"


@dataclass(frozen=True)
class Resume:
    """A resumed attempt: which attempt this is, and each node rank's checkpoint snapshot."""

    attempt: int
    snapshots: dict[int, str] = field(default_factory=dict)
    of_run: str | None = None          # `fleet up --resume RUN`: the run it continues
    previous: tuple[dict, ...] = ()    # recovery: the earlier attempts of the same run (recovery.attempt_row)


@dataclass(frozen=True)
class CheckpointUpload:
    """One machine's checkpoint as uploaded: its snapshot, its size, what crossed the network."""

    node_rank: int
    snapshot_id: str
    bytes_total: int
    bytes_sent: int
    files: int
    skipped: int = 0        # names in the directory that are not regular files (FIFOs, devices): not uploaded


def checkpoint_env(machine: Machine, run_id: str, attempt: int) -> dict[str, str]:
    env = {"FLEET_CHECKPOINT_DIR": checkpoint_dir(machine, run_id), "FLEET_ATTEMPT": str(attempt)}
    if attempt > 1:
        env["FLEET_RESUMED"] = "1"
    return env


def _helper_source() -> str:
    return (Path(__file__).resolve().parent.parent / "remote" / "checkpoint_helper.py").read_text()


def _read_exact(stream, n: int) -> bytes:
    parts, left = [], n
    while left:
        data = stream.read(left)
        if not data:
            raise EOFError("the checkpoint helper stopped mid-chunk")
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _upload_command(machine: Machine, run_id: str, remove: bool = False) -> str:
    """The helper over the checkpoint directory; an empty one (most runs write no checkpoint) is
    answered by the shell in the helper's own words, without starting a Python for it. `remove`:
    the directory is removed once sent, before the last line."""
    from ..remote.ssh import shell_command
    d = shlex.quote(checkpoint_dir(machine, run_id))
    helper = shell_command([machine.python, "-I", "-S", "-c", _helper_source(), checkpoint_dir(machine, run_id),
                            *(["--remove"] if remove else [])])
    empty = shlex.quote(json.dumps({"entries": [], "cdc": False}))
    done = shlex.quote(json.dumps({"done": True}))
    rm = f"rm -rf -- {d}; " if remove else ""
    return (f"if [ -d {d} ] && [ -r {d} ] && [ -x {d} ] && [ -z \"$(ls -A {d})\" ]; then "
            f"printf '%s\\n' {empty}; read -r _ || :; {rm}printf '%s\\n' {done}; else {helper}; fi")


def upload(machine: Machine, store, run_id: str, *, timeout: float = 600,
           hurry: threading.Event | None = None, remove: bool = False) -> CheckpointUpload:
    """Snapshot the machine's checkpoint directory into `store`, sending only the chunks the store
    lacks; the ref `ckpt-<run>-n<rank>` then names it. `hurry` set (a second Ctrl-C) cuts it short."""
    from ..snapshots.store_guard import guarded
    store = guarded(store)     # announced: a gc never runs between the presence check and the manifest
    try:
        return _upload(machine, store, run_id, timeout, hurry, remove)
    finally:
        store.done()


def _upload(machine: Machine, store, run_id: str, timeout: float,
            hurry: threading.Event | None = None, remove: bool = False) -> CheckpointUpload:
    from ..remote.ssh import connect
    from ..snapshots.manifest import Entry, Manifest, check_relpath
    try:
        with connect(machine, timeout=30) as session:
            chan = session.open_channel(window_size=64 << 20, max_packet_size=256 << 10)
            chan.settimeout(timeout)
            if hurry is not None:
                _close_on(hurry, chan)
            chan.exec_command(_upload_command(machine, run_id, remove))
            rf, wf = chan.makefile("rb"), chan.makefile_stdin("wb")
            line = rf.readline(MAX_HEAD + 1)
            if not line:
                err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
                # Its last line says why; lines before it name files skipped (a FIFO), not the failure.
                raise MachineUnreachable(f"checkpoint upload from {machine.id} failed: "
                                         f"{err.splitlines()[-1][-300:] if err else 'no answer'}")
            head = json.loads(line) if len(line) <= MAX_HEAD else None
            if not isinstance(head, dict) or not isinstance(head.get("entries"), list) \
                    or not all(isinstance(e, dict) for e in head["entries"]):
                raise ValueError("its checkpoint listing is malformed")
            entries = [Entry.from_json(e) for e in head["entries"]]
            for e in entries:
                check_relpath(e.path)
            manifest = Manifest(entries)
            # With their sizes: a chunk cut short under its name in the store is sent again.
            wanted = {h: n for e in manifest.files() for h, n in e.chunks}
            present = store.has_chunks(wanted)
            missing = [h for h in wanted if h not in present]
            wf.write(json.dumps({"want": missing}).encode() + b"\n")
            wf.flush()
            sent = 0
            for expected in missing:
                try:
                    header = _read_exact(rf, HEADER)
                except EOFError:      # it stopped: its own line says why (a file replaced, unreadable)
                    err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
                    raise MachineUnreachable(f"checkpoint upload from {machine.id} failed: "
                                             f"{err.splitlines()[-1][-300:] if err else 'it stopped mid-chunk'}") from None
                h, field = header[:64].decode("ascii", "replace"), header[64:76]
                # The size the listing gave this chunk, and nothing else: a frame length from the
                # machine ("-01", 12 nines) must never set how much the controller reads into memory.
                if not field.isdigit() or int(field) != wanted[expected] or int(field) > MAX_CHUNK_BYTES:
                    raise ValueError(f"its frame for chunk {expected[:12]} has length {field!r}, not the listed "
                                     f"{wanted[expected]}")
                n = int(field)
                data = _read_exact(rf, n)
                if h != expected or hashlib.sha256(data).hexdigest() != h:
                    raise IntegrityError(f"checkpoint chunk {h[:12]} from {machine.id} does not match its hash "
                                         "(was the checkpoint rewritten in place while uploading?)")
                store.put_chunk(h, data)
                sent += n
            json.loads(rf.readline() or b"{}")
            store.flush()
    except FleetError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MachineUnreachable(f"checkpoint upload from {machine.id} ({machine.address}) failed: {exc}") from None
    skipped = head.get("skipped") if isinstance(head.get("skipped"), int) else 0
    if not manifest.files():   # nothing checkpointed (yet): no snapshot, no ref
        return CheckpointUpload(machine.node_rank, "", 0, 0, 0, skipped)
    data = manifest.canonical_bytes()
    sid = hashlib.sha256(data).hexdigest()
    if not store.has_manifest(sid):
        store.put_manifest(sid, data)
    store.set_ref(ref_name(run_id, machine.node_rank), sid)
    return CheckpointUpload(machine.node_rank, sid, manifest.total_size, sent, len(manifest.files()), skipped)


def _close_on(hurry: threading.Event, chan) -> None:
    """Close `chan` once `hurry` is set; the watcher ends with the channel."""
    def watch() -> None:
        while not chan.closed:
            if hurry.wait(0.5):
                chan.close()
                return
    threading.Thread(target=watch, name="checkpoint-hurry", daemon=True).start()


def prepare(lease: Lease, store, run_id: str, resume: Resume | None,
            warn: Callable[[str], None] | None = None) -> None:
    """Before setup: an empty checkpoint directory on every machine, or, for a resumed attempt,
    the node's latest checkpoint restored into it (only the chunks the machine lacks are sent).
    `warn`: told when a machine's host cache held a corrupt entry (dropped, and sent again), as staging is."""
    from ..parallel import parallel
    from ..remote.ssh import connect

    def one(m: Machine) -> None:
        sid = resume.snapshots.get(m.node_rank) if resume else None
        if sid:
            from ..snapshots.sync import Target, sync_machine
            from ..snapshots.sync_progress import warn_dropped
            stats = sync_machine(m, store, [Target(checkpoint_dir(m, run_id), [sid], read_only=False)])
            warn_dropped(warn or (lambda _message: None), stats)
        else:
            with connect(m, timeout=30) as s:
                s.run(["mkdir", "-p", checkpoint_dir(m, run_id)], check=True)

    parallel(lease.machines, one)


class Checkpointer:
    """Uploads every machine's checkpoint: on a timer while the command runs (in the background,
    never two at once), and once more at the end. Failures are warnings: the previous checkpoint
    stays the latest."""

    def __init__(self, lease: Lease, store, run_id: str, interval_s: float, warn: Callable[[str], None],
                 on_upload: Callable[[list[CheckpointUpload]], None] | None = None,
                 hurry: threading.Event | None = None, remove_at_finish: bool = False):
        """`remove_at_finish`: the last upload also removes the machines' checkpoint directory (a sweep
        trial's: later trials on the machine must not find it, and would pile them up)."""
        self.lease, self.store, self.run_id, self.interval_s = lease, store, run_id, interval_s
        self.warn, self.on_upload, self.hurry, self.remove_at_finish = warn, on_upload, hurry, remove_at_finish
        self.latest: dict[int, CheckpointUpload] = {}
        self._told_skipped: set[int] = set()
        self._busy = threading.Lock()
        self._next = time.monotonic() + interval_s if interval_s > 0 else None
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """From the execute loop, about once a second: start an upload when one is due."""
        if self._next is None or time.monotonic() < self._next or self._busy.locked():
            return
        self._next = time.monotonic() + self.interval_s
        self._thread = threading.Thread(target=self.sync, name="checkpoint", daemon=True)
        self._thread.start()

    def sync(self, skip: set | frozenset = frozenset(), remove: bool = False) -> list[CheckpointUpload]:
        """Upload every machine's checkpoint now (waits for an upload already under way); machines
        in `skip` (lost) are not asked."""
        from ..parallel import parallel
        with self._busy:
            got: list[CheckpointUpload] = []
            lock = threading.Lock()

            def one(m: Machine) -> None:
                try:
                    up = upload(m, self.store, self.run_id, hurry=self.hurry, remove=remove)
                except Exception as exc:  # noqa: BLE001 — one machine's failure never drops the others' uploads
                    why = exc.one_line() if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
                    self.warn(f"checkpoint of node {m.node_rank} not uploaded ({why}); "
                              "the previous one stays the latest")
                    return
                if up.skipped and m.node_rank not in self._told_skipped:   # once per node, not every interval
                    self._told_skipped.add(m.node_rank)
                    self.warn(f"checkpoint of node {m.node_rank}: {up.skipped} name(s) in it not uploaded (not "
                              "regular files, such as a FIFO or a device, or gone since they were listed)")
                with lock:
                    got.append(up)

            parallel([m for m in self.lease.machines if m.id not in skip], one)
            got = [up for up in got if up.snapshot_id]
            changed = [up for up in got if up.node_rank not in self.latest
                       or self.latest[up.node_rank].snapshot_id != up.snapshot_id]
            for up in got:
                self.latest[up.node_rank] = up
            if changed and self.on_upload is not None:   # a checkpoint unchanged since the last upload: quiet
                self.on_upload(sorted(changed, key=lambda u: u.node_rank))
            return got

    def finish(self, skip: set | frozenset = frozenset()) -> list[CheckpointUpload]:
        """The last upload, after the command ended; every node's latest checkpoint."""
        self._next = None
        if self._thread is not None:
            self._thread.join(timeout=600)
        if self.hurry is not None and self.hurry.is_set():
            return [self.latest[r] for r in sorted(self.latest)]
        self.sync(skip, remove=self.remove_at_finish)
        return [self.latest[r] for r in sorted(self.latest)]


def latest_snapshots(store, run_id: str, node_ranks: list[int]) -> dict[int, str]:
    """Each node's latest checkpoint of a run, from the store's refs."""
    found = {}
    for rank in node_ranks:
        sid = store.get_ref(ref_name(run_id, rank))
        if sid:
            found[rank] = sid
    return found


def begin(ctx, lease: Lease, store) -> Checkpointer:
    """Stage "checkpoint" (after ready, before stage and setup): each machine's checkpoint directory
    made, or, for a resumed attempt, its node's latest checkpoint restored there."""
    resume = ctx.options.resume
    if resume is not None and resume.snapshots:
        ranks = {m.node_rank for m in lease.machines}
        left_out = sorted(r for r in resume.snapshots if r not in ranks)
        if left_out:    # fewer machines than the run it continues: those nodes' checkpoints stay in the store
            ctx.events.warn(f"run {resume.of_run or 'resumed'} left checkpoints of {len(resume.snapshots)} node(s); "
                            f"this attempt has {len(ranks)} machine(s), so node(s) {', '.join(map(str, left_out))} "
                            "start without theirs (lease as many machines as it had to restore every node)")
        ctx.events.phase("checkpoint", f"restoring the latest checkpoint of {len(resume.snapshots) - len(left_out)} "
                                       f"node(s) (attempt {ctx.attempt})")
    prepare(lease, store, ctx.run_id, resume, ctx.events.warn)
    interval = ctx.config.checkpoint_interval_s or 0

    def uploaded(ups: list[CheckpointUpload]) -> None:
        total, sent = sum(u.bytes_total for u in ups), sum(u.bytes_sent for u in ups)
        ctx.events.phase("checkpoint", f"{len(ups)} node(s): {_size(total)} checkpointed, {_size(sent)} sent")

    return Checkpointer(lease, store, ctx.run_id, interval, ctx.events.warn, uploaded, hurry=ctx.hurry,
                        remove_at_finish=ctx.options.trial_leaf is not None)


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"
