"""One rendezvous port per lease: probed free on node 0's host, claimed in the state database.

A fixed MASTER_PORT made two multi-node runs on one host collide (EADDRINUSE) or, worse, join each
other's process group. Each lease gets a port that is free on its master's host when probed and
reserved in fleet's state (the team's shared database on team hosts), so a second lease can not be
handed the same port in the window before the first run binds it. Leases whose claims live in
different databases (each user's own, on a shared Slurm node; FLEET_HOMEs on one computer) see none
of each other's: each probes the range in a shuffled order of its own, so two that probe before
either binds meet only by chance (about 1 in 10,000), and each command's port is probed again right
before it starts (`confirm_master_port`). The reservation lives as long as the lease is
leasing/active; `fleet run LEASE` on a kept lease reuses it while it is free.
"""
from __future__ import annotations

from typing import Iterable

from .errors import InfrastructureError
from .models import Lease, Machine, utcnow

# Below Linux's ephemeral ports (32768 up: outgoing connections take those at any moment) and
# Kubernetes' NodePorts (30000-32767: intercepted on a node though nothing binds them). Wide, for
# leases in separate databases, which only chance keeps apart: two that probe before either binds
# share a port about once in len(PORT_RANGE).
PORT_RANGE = range(20000, 30000)
PROBE_BATCH = 32                   # candidates probed in the first SSH round trip: nearly always enough
PROBE_MORE = 2048                  # then per round trip: a full (or squatted) range is known in 6

# Run by the machine's python: which of the given ports can be bound on every interface right now,
# IPv6 ones too: a listener on [::] alone (IPV6_V6ONLY) leaves the IPv4 bind free, yet a framework
# that binds [::] dies with EADDRINUSE and ranks that reach a master by a name resolving to IPv6
# connect to it. Port 0 asks the kernel for any free port (the fallback when the whole range is
# taken); those sockets stay open until the end, so several get distinct ports, the others close at once.
# A socket that cannot be made (EMFILE: a local machine inherits the controller's `ulimit -n`) ends
# the probe with the ports found so far: fewer candidates is still an answer.
_PROBE = """
import errno, socket, sys
def v6_free(port):
    try:
        t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return True   # no IPv6 here: the IPv4 answer stands
    try:
        t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        t.bind(("::", port))
        return True
    except OSError as exc:
        return exc.errno != errno.EADDRINUSE   # EADDRNOTAVAIL: IPv6 switched off
    finally:
        t.close()
held, free = [], []
for arg in sys.stdin.read().split():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        if not free:
            raise   # not one socket: the error itself, not "every port is taken"
        break
    try:
        s.bind(("", int(arg)))
    except OSError:
        s.close()
        continue
    if not v6_free(s.getsockname()[1]):
        s.close()
        continue
    free.append(s.getsockname()[1])
    if int(arg):
        s.close()
    else:
        held.append(s)
print(" ".join(map(str, free)))
for s in held:
    s.close()
"""


class PortReservations:
    """Claims on (host, port) pairs, one per lease and host, over either state database."""

    def __init__(self, db):
        self.db = db

    def held_by(self, lease_id: str, host: str) -> int | None:
        rows = self.db.execute("SELECT port FROM port_reservations WHERE lease_id = ? AND host = ?", (lease_id, host))
        return int(rows[0]["port"]) if rows else None

    def taken(self, host: str) -> set[int]:
        """Ports on `host` held by live leases; claims of ended leases are dropped on the way."""
        self.db.execute("DELETE FROM port_reservations WHERE host = ? AND lease_id IN"
                        " (SELECT id FROM leases WHERE status NOT IN ('leasing', 'active'))", (host,))
        return {int(r["port"]) for r in self.db.execute("SELECT port FROM port_reservations WHERE host = ?", (host,))}

    def claim(self, lease_id: str, host: str, candidates: Iterable[int], *, reuse: bool = True) -> int | None:
        """The first candidate this lease could claim on `host` (its existing claim wins unless
        `reuse` is False: a further port for the same lease), or None."""
        held = self.held_by(lease_id, host) if reuse else None
        if held is not None:
            return held
        for port in candidates:
            # ON CONFLICT DO NOTHING rather than catching the violation: a failed INSERT would abort
            # the surrounding PostgreSQL transaction. Whoever holds the row afterwards won it.
            self.db.execute("INSERT INTO port_reservations (host, port, lease_id, created_at) VALUES (?,?,?,?)"
                            " ON CONFLICT (host, port) DO NOTHING", (host, port, lease_id, utcnow().isoformat()))
            rows = self.db.execute("SELECT lease_id FROM port_reservations WHERE host = ? AND port = ?", (host, port))
            if rows and rows[0]["lease_id"] == lease_id:
                return port
        return None

    def release(self, lease_id: str, host: str | None = None, port: int | None = None) -> None:
        """The lease's claims; with `host` and `port`, that one only."""
        if host is None or port is None:
            self.db.execute("DELETE FROM port_reservations WHERE lease_id = ?", (lease_id,))
        else:
            self.db.execute("DELETE FROM port_reservations WHERE lease_id = ? AND host = ? AND port = ?",
                            (lease_id, host, port))


def probe_free_ports(machine: Machine, candidates: list[int]) -> list[int]:
    """Which candidates can be bound on `machine` now (asked through SSH, with the machine's python)."""
    from .remote.ssh import connect
    with connect(machine, timeout=30) as session:
        # On stdin: other users of the host read a process's arguments, and these name the port a
        # master is about to bind (one bound first by them would meet the other ranks).
        result = session.run([machine.python, "-I", "-c", _PROBE], stdin=" ".join(map(str, candidates)).encode(),
                             check=False, timeout=60)
    if result.exit_code != 0:
        # The last line is the error; the first of a traceback says nothing, and only one line is shown.
        lines = result.stderr.strip().splitlines()
        raise InfrastructureError(f"could not probe free ports on {machine.id}: "
                                  f"{lines[-1][-300:] if lines else f'exit {result.exit_code}'}")
    return [int(p) for p in result.stdout.split()]


def candidate_order(lease_id: str) -> list[int]:
    """The range shuffled by the lease's id: leases recorded in different state databases probe
    different ports first, so two that probe at the same moment are not both handed the same free
    port. A shuffle, not the range from a point of the lease's own: every lease whose point fell in a
    stretch of bound ports was handed the first free port after it."""
    import hashlib
    import random
    ports = list(PORT_RANGE)
    random.Random(hashlib.sha256(lease_id.encode()).digest()).shuffle(ports)
    return ports


def _batches(ports: list[int]):
    """The first PROBE_BATCH ports, then the rest PROBE_MORE at a time."""
    for start, end in [(0, PROBE_BATCH)] + [(i, i + PROBE_MORE) for i in range(PROBE_BATCH, len(ports), PROBE_MORE)]:
        if ports[start:end]:
            yield ports[start:end]


def allocate_master_port(state, lease: Lease, probe=probe_free_ports) -> int:
    """The lease's rendezvous port on node 0's host: its existing claim, else a newly probed and claimed one."""
    master = min(lease.machines, key=lambda m: m.node_rank)
    host = master.host
    reservations = PortReservations(state.db)
    held = reservations.held_by(lease.id, host)
    if held is not None:
        return held
    taken = reservations.taken(host)
    for batch in _batches([p for p in candidate_order(lease.id) if p not in taken]):
        port = reservations.claim(lease.id, host, probe(master, batch))
        if port is not None:
            return port
    # Every port of the range is taken or bound: any port the kernel calls free will do.
    for _ in range(5):
        port = reservations.claim(lease.id, host, [p for p in probe(master, [0] * 4) if p not in taken])
        if port is not None:
            return port
    raise InfrastructureError(f"no free rendezvous port on {host} (node 0 of lease {lease.id})",
                              hint="too many leases on this host; release some with `fleet down`")


def allocate_more_ports(state, lease: Lease, master: Machine, count: int, probe=probe_free_ports) -> list[int]:
    """`count` further ports on `master`'s host, claimed under the lease beside its own: a sweep's
    pool runs several trials at once on its lease, each a rendezvous of its own (one shared port
    made two trials on one host collide, or join each other's process group). They are released
    with the lease's own claim."""
    reservations = PortReservations(state.db)
    got: list[int] = []
    if count <= 0:
        return got
    taken = reservations.taken(master.host)
    batches = _batches([p for p in candidate_order(lease.id) if p not in taken])
    fallback = 0
    while len(got) < count:
        batch = next(batches, None)
        if batch is None:   # every port of the range taken or bound: the kernel's choice
            if fallback == 5:
                raise InfrastructureError(f"no free rendezvous ports on {master.host} for the pool of lease "
                                          f"{lease.id}", hint="too many leases on this host; release some with "
                                          "`fleet down`")
            fallback += 1
            batch = [0] * min(PROBE_BATCH, count - len(got))
        for port in probe(master, batch):
            if len(got) < count and port not in taken and port not in got and \
                    reservations.claim(lease.id, master.host, [port], reuse=False) is not None:
                got.append(port)
    return got


def confirm_master_port(ctx, lease: Lease, probe=probe_free_ports) -> None:
    """Right before a command starts, the port it will be handed must still be free on node 0's host.
    The claim binds nothing: a kept lease's port waits hours for `fleet run`, setup takes minutes, the
    previous run's master may have left it in TIME_WAIT (a plain bind is refused for a minute), and
    what does not read this state database (another FLEET_HOME's run, a teammate's torchrun, any
    local user) binds what it likes. Handed such a port, rank 0 died with EADDRINUSE while the other
    ranks connected to whatever listened there. A taken port is replaced by a newly claimed one: the
    lease's own for good (recorded in its meta; the old claim is kept), a sweep trial's (a port of its
    slot, which the pool keeps) for this run only, dropped by `release_run_port` when it ends."""
    from .lease_prepare import RENDEZVOUS, merge_lease_meta
    if not lease.machines or RENDEZVOUS not in lease.meta:
        return
    master = min(lease.machines, key=lambda m: m.node_rank)
    # The state database is the team's: what it holds may be anything, and is replaced, not obeyed.
    recorded = lease.meta[RENDEZVOUS].get("port") if isinstance(lease.meta[RENDEZVOUS], dict) else None
    port = recorded if type(recorded) is int and 0 < recorded < 65536 else None
    if port is not None:
        free = _reprobe(ctx, master, port, probe)
        if free is None or free == [port]:
            return
    [new] = allocate_more_ports(ctx.state, lease, master, 1, probe=probe)
    ctx.events.warn(f"rendezvous port {port} on {master.host} is in use (another program, or a previous "
                    f"run's connection still closing): this run gets MASTER_PORT {new}" if port is not None else
                    f"lease {lease.id} records {str(recorded)[:40]!r} as its rendezvous port, which is not a "
                    f"port: this run gets MASTER_PORT {new}")
    if ctx.options.trial_leaf is not None:
        lease.meta[RENDEZVOUS] = {"host": master.host, "port": new, "this_run_only": True}   # a copy: not the pool's
        return
    # The old claim stays the lease's until it is released: the port may be bound by another run on
    # this very lease (two `fleet run LEASE` at once), and unclaimed it would be handed to the next lease.
    patch = {RENDEZVOUS: {"host": master.host, "port": new}}
    lease.meta.update(patch)
    merge_lease_meta(ctx.state, lease.id, patch)


def _reprobe(ctx, master: Machine, port: int, probe, tries: int = 2) -> list[int] | None:
    """The probe of the port already claimed, asked again once if SSH failed (a dropped connection, a
    slow sshd on a loaded host); None if it still could not be asked. The port was free when it was
    claimed, and the command that follows needs SSH too: a blip in this check alone must not end a
    run that would otherwise start."""
    for attempt in range(tries):
        try:
            return probe(master, [port])
        except (InfrastructureError, OSError) as exc:
            last = exc
            if attempt + 1 < tries:
                import time
                time.sleep(1.0)
    ctx.events.warn(f"could not re-check rendezvous port {port} on {master.host} "
                    f"({str(last)[:200]}): the run keeps it")
    return None


def release_run_port(state, lease: Lease) -> None:
    """Drop the port `confirm_master_port` claimed for one trial's run only."""
    from .lease_prepare import RENDEZVOUS
    held = lease.meta.get(RENDEZVOUS) or {}
    if held.get("this_run_only"):
        PortReservations(state.db).release(lease.id, held["host"], int(held["port"]))
