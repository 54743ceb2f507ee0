"""Rendezvous ports: each lease claims its own port on its master's host, in either state database."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from fleet.models import Lease, Machine, utcnow
from fleet.rendezvous import PORT_RANGE, PortReservations, allocate_master_port
from fleet.state import StateStore
from fleet.state.db import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    if request.param == "postgresql":
        from fleet.state.postgres import PostgresDatabase
        db = PostgresDatabase(request.getfixturevalue("postgres_url"))
    else:
        db = Database(tmp_path / "state.db")
    store = StateStore(db)
    yield store
    store.close()


def make_lease(state, lease_id: str, host: str = "gpu-box-1", machines: int = 2) -> Lease:
    now = utcnow()
    lease = Lease(id=lease_id, provider="ssh", template="t", created_at=now, deadline=now + timedelta(hours=1),
                  max_deadline=now + timedelta(hours=2),
                  machines=[Machine(id=f"{lease_id}-n{r}", lease_id=lease_id, node_rank=r, host=host, port=22,
                                    user="u", key_path="k", host_key="h", workdir=f"/w/{lease_id}/{r}")
                            for r in range(machines)])
    state.save_lease(lease)
    return lease


def everything_free(machine, candidates):
    """A host where nothing is bound yet: both leases probe before either run binds its port."""
    return list(candidates)


def test_two_leases_on_one_host_get_distinct_ports_and_keep_them(state):
    a, b = make_lease(state, "l-aaaa0001"), make_lease(state, "l-bbbb0002")
    port_a = allocate_master_port(state, a, probe=everything_free)
    port_b = allocate_master_port(state, b, probe=everything_free)
    assert port_a != port_b
    assert {port_a, port_b} <= set(PORT_RANGE)
    # asked again (`fleet run LEASE` on a kept lease): the same port, no new claim
    assert allocate_master_port(state, a, probe=lambda m, c: pytest.fail("probed again")) == port_a


def test_a_released_lease_frees_its_port(state):
    a, b = make_lease(state, "l-aaaa0001"), make_lease(state, "l-bbbb0002")
    port_a = allocate_master_port(state, a, probe=everything_free)
    only_a = lambda m, cands: [p for p in cands if p == port_a]          # noqa: E731 — the one free port
    state.set_lease_status(a.id, "released")
    assert allocate_master_port(state, b, probe=only_a) == port_a
    c = make_lease(state, "l-cccc0003")
    PortReservations(state.db).release(b.id)   # explicit release frees it too
    assert allocate_master_port(state, c, probe=only_a) == port_a


def test_other_hosts_and_bound_ports_do_not_count(state):
    a, b = make_lease(state, "l-aaaa0001", host="gpu-box-1"), make_lease(state, "l-bbbb0002", host="gpu-box-2")
    port_a = allocate_master_port(state, a, probe=everything_free)
    assert allocate_master_port(state, b, probe=lambda m, cands: [p for p in cands if p == port_a]) == port_a
    c = make_lease(state, "l-cccc0003", host="gpu-box-1")
    busy = set(PORT_RANGE[:40])   # something else listens there: the probe on the host says so
    port = allocate_master_port(state, c, probe=lambda m, cands: [p for p in cands if p not in busy])
    assert port not in busy


def test_concurrent_allocations_never_share_a_port(state):
    leases = [make_lease(state, f"l-{i:04d}cafe") for i in range(8)]
    ports, errors = {}, []
    start = threading.Barrier(len(leases))

    def one(lease):
        try:
            start.wait(30)
            ports[lease.id] = allocate_master_port(state, lease, probe=everything_free)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(set(ports.values())) == len(leases), ports


def test_leases_recorded_in_separate_databases_probe_different_ports_first(tmp_path, monkeypatch):
    """Two users of one Slurm node, each with their own state: neither sees the other's claim, and
    both probe before either run binds. Starting both at 29500 handed both 29500."""
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    stores = [StateStore(Database(tmp_path / f"state-{i}.db")) for i in range(2)]
    try:
        ports = [allocate_master_port(s, make_lease(s, lease_id, host="node-7"), probe=everything_free)
                 for s, lease_id in zip(stores, ("l-5f1c0a11", "l-9e2d4b77"))]
    finally:
        for s in stores:
            s.close()
    assert ports[0] != ports[1] and set(ports) <= set(PORT_RANGE), ports


def test_the_port_probe_under_a_low_open_files_limit_answers_with_the_ports_it_could_hold(tmp_path):
    """A local machine inherits the controller's `ulimit -n`: at 32 the probe's 32 sockets held at once
    died with EMFILE and `fleet up` ended `could not probe free ports on …: Traceback (most recent
    call last):`. Fewer candidates is still an answer."""
    import resource
    import subprocess
    import sys
    from fleet.rendezvous import _PROBE

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (12, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    candidates = ["0"] * 32   # port 0: always bindable, so only the limit can stop the probe
    proc = subprocess.run([sys.executable, "-S", "-c", _PROBE], input=" ".join(candidates), capture_output=True,
                          text=True, timeout=30, preexec_fn=low_limit)
    assert proc.returncode == 0, proc.stderr
    assert 0 < len(proc.stdout.split()) < 32


def test_a_probe_that_cannot_make_one_socket_says_so_rather_than_every_port_taken():
    import subprocess
    import sys
    from fleet.rendezvous import _PROBE

    # Python needs descriptors to start, so the limit is lowered once started, to the lowest free one:
    # the next descriptor made is refused (EMFILE).
    no_room = ("import os, resource, socket\n"
               "free = os.dup(0); os.close(free)\n"
               "resource.setrlimit(resource.RLIMIT_NOFILE, (free, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n")
    proc = subprocess.run([sys.executable, "-S", "-c", no_room + _PROBE], input="0", capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0 and "Too many open files" in proc.stderr, (proc.returncode, proc.stderr)


def test_a_failed_probe_names_the_machines_last_error_line_not_the_traceback_header(monkeypatch):
    from types import SimpleNamespace
    import fleet.remote.ssh as ssh
    from fleet.errors import InfrastructureError
    from fleet.rendezvous import probe_free_ports

    class Session:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def run(self, *args, **kwargs):
            return SimpleNamespace(exit_code=1, stdout="", stderr="Traceback (most recent call last):\n"
                                   "  File \"<string>\", line 5, in <module>\nOSError: [Errno 24] Too many open files\n")

    monkeypatch.setattr(ssh, "connect", lambda machine, timeout=30: Session())
    machine = SimpleNamespace(id="l-x-n0", python="python3")
    with pytest.raises(InfrastructureError) as info:
        probe_free_ports(machine, [29500])
    assert info.value.one_line() == "could not probe free ports on l-x-n0: OSError: [Errno 24] Too many open files"


def test_a_trials_replacement_for_its_taken_port_is_its_runs_only(state):
    """A sweep trial's port is its slot's, kept by the pool for the trials after it: a replacement
    (the slot's port still in TIME_WAIT after the trial before) must neither become the pool lease's
    port nor stay claimed once the trial ends (claims grew by one per trial)."""
    from types import SimpleNamespace
    from fleet.lease_prepare import RENDEZVOUS
    from fleet.rendezvous import confirm_master_port, release_run_port
    from fleet.run.pool_lease import sub_lease
    pool = make_lease(state, "l-aaaa0001")
    port = allocate_master_port(state, pool, probe=everything_free)
    pool.meta[RENDEZVOUS] = {"host": "gpu-box-1", "port": port}
    trial = sub_lease(pool, [m.id for m in pool.machines])
    warned: list[str] = []
    ctx = SimpleNamespace(state=state, options=SimpleNamespace(trial_leaf="trial-0"),
                          events=SimpleNamespace(warn=warned.append))
    confirm_master_port(ctx, trial, probe=lambda m, cands: [p for p in cands if p != port])
    new = trial.meta[RENDEZVOUS]["port"]
    assert new != port and pool.meta[RENDEZVOUS]["port"] == port
    assert warned == [f"rendezvous port {port} on gpu-box-1 is in use (another program, or a previous run's "
                      f"connection still closing): this run gets MASTER_PORT {new}"]
    assert PortReservations(state.db).taken("gpu-box-1") == {port, new}
    release_run_port(state, trial)
    assert PortReservations(state.db).taken("gpu-box-1") == {port}


def test_a_kept_leases_taken_port_stays_claimed_while_another_run_on_it_may_bind_it(state):
    """Two `fleet run LEASE` at once on one kept lease: the second finds the first's master on the
    lease's port and moves the lease to a new one. The old port must stay claimed (the first run
    still listens there): dropped, the next lease on the host was handed it."""
    from types import SimpleNamespace
    from fleet.lease_prepare import RENDEZVOUS
    from fleet.rendezvous import confirm_master_port
    kept = make_lease(state, "l-aaaa0001")
    port = allocate_master_port(state, kept, probe=everything_free)
    kept.meta[RENDEZVOUS] = {"host": "gpu-box-1", "port": port}
    ctx = SimpleNamespace(state=state, options=SimpleNamespace(trial_leaf=None),
                          events=SimpleNamespace(warn=lambda line: None))
    confirm_master_port(ctx, kept, probe=lambda m, cands: [p for p in cands if p != port])
    new = kept.meta[RENDEZVOUS]["port"]
    assert new != port and state.get_lease("l-aaaa0001").meta[RENDEZVOUS]["port"] == new
    assert PortReservations(state.db).taken("gpu-box-1") == {port, new}


def test_leases_in_separate_databases_on_a_busy_host_do_not_pile_onto_one_free_port(tmp_path, monkeypatch):
    """Users of one host with state databases of their own (FLEET_HOMEs on one computer's local
    machines, a Slurm node) see none of each other's claims. Each lease probed the range in order from
    a point of its own: every lease whose point fell in a stretch of bound ports was handed the first
    free port after it, so on a host with a fifth of the range in use six leases shared ports."""
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    busy = set(PORT_RANGE[:len(PORT_RANGE) // 5])   # other runs' masters, or anything else, listen there
    ports = []
    for i, lease_id in enumerate(f"l-{n:04x}beef" for n in range(6)):
        store = StateStore(Database(tmp_path / f"state-{i}.db"))
        try:
            ports.append(allocate_master_port(store, make_lease(store, lease_id, host="node-7"),
                                              probe=lambda m, cands: [p for p in cands if p not in busy]))
        finally:
            store.close()
    assert len(set(ports)) == len(ports), ports


def test_a_host_whose_whole_range_is_bound_is_answered_in_a_few_round_trips(state):
    """A local user binding every port of the range (or a host that full) cost one SSH round trip per
    32 ports before the kernel's choice was taken; its answer must stay quick however wide the range."""
    lease = make_lease(state, "l-aaaa0001")
    probes: list[list[int]] = []

    def full(machine, cands):
        probes.append(list(cands))
        return [40000 + i for i, p in enumerate(cands) if p == 0]   # only the kernel's choice is free

    port = allocate_master_port(state, lease, probe=full)
    assert port == 40000 and port not in PORT_RANGE
    assert len(probes) <= 8, len(probes)


def test_a_port_held_on_ipv6_alone_is_not_called_free():
    """A listener on [::] with IPV6_V6ONLY leaves the IPv4 bind of its port free: the probe called the
    port free, and a framework binding [::] (or ranks reaching the master by a name that resolves to
    IPv6) met the listener instead of rank 0."""
    import socket
    import subprocess
    import sys
    from fleet.rendezvous import _PROBE
    try:
        squatter = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        squatter.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        squatter.bind(("::", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    with squatter:
        squatter.listen()
        port = squatter.getsockname()[1]
        with socket.socket() as other:   # a port free on both, beside it
            other.bind(("", 0))
            free = other.getsockname()[1]
        proc = subprocess.run([sys.executable, "-I", "-c", _PROBE], input=f"{port} {free}", capture_output=True,
                              text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(free)]


@pytest.mark.parametrize("recorded", ["abc", 70000, None])
def test_a_recorded_port_that_is_not_a_port_is_replaced_in_one_line(state, recorded):
    """The lease's meta lives in the team's database: a port there that is not one ended `fleet run
    LEASE` with `internal error: ValueError` (or TypeError), or an OverflowError from the probe."""
    from types import SimpleNamespace
    from fleet.lease_prepare import RENDEZVOUS
    from fleet.rendezvous import confirm_master_port
    lease = make_lease(state, "l-aaaa0001")
    lease.meta[RENDEZVOUS] = {"host": "gpu-box-1", "port": recorded}
    warned: list[str] = []
    ctx = SimpleNamespace(state=state, options=SimpleNamespace(trial_leaf=None),
                          events=SimpleNamespace(warn=warned.append))
    confirm_master_port(ctx, lease, probe=everything_free)
    new = lease.meta[RENDEZVOUS]["port"]
    assert new in PORT_RANGE
    assert warned == [f"lease l-aaaa0001 records {str(recorded)!r} as its rendezvous port, which is not a port: "
                      f"this run gets MASTER_PORT {new}"]
    assert state.get_lease("l-aaaa0001").meta[RENDEZVOUS]["port"] == new


def test_the_ports_probed_are_not_in_the_probes_command_line(monkeypatch):
    """Any user of node 0's host reads a process's arguments (/proc/PID/cmdline, ps): the probe just
    before a command starts named the very port its master would bind a moment later, so a hostile
    user could bind it first and meet the other ranks."""
    from types import SimpleNamespace
    import fleet.remote.ssh as ssh
    from fleet.rendezvous import probe_free_ports
    sent = []

    class Session:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def run(self, command, stdin=None, **kwargs):
            sent.append((command, stdin))
            return SimpleNamespace(exit_code=0, stdout="23456\n", stderr="")

    monkeypatch.setattr(ssh, "connect", lambda machine, timeout=30: Session())
    assert probe_free_ports(SimpleNamespace(id="l-x-n0", python="python3"), [23456, 27891]) == [23456]
    [(command, stdin)] = sent
    assert not any("23456" in part or "27891" in part for part in command), command
    assert stdin == b"23456 27891"


def test_an_ssh_blip_in_the_check_before_the_command_keeps_the_claimed_port(state):
    """The port is probed again right before the command starts; a connection that failed once (or
    every time) in that check alone ended the run with `could not probe free ports`, though the port
    had been free when claimed and the command's own connection might well succeed."""
    from types import SimpleNamespace
    from fleet.errors import InfrastructureError
    from fleet.lease_prepare import RENDEZVOUS
    from fleet.rendezvous import confirm_master_port
    lease = make_lease(state, "l-aaaa0001")
    port = allocate_master_port(state, lease, probe=everything_free)
    lease.meta[RENDEZVOUS] = {"host": "gpu-box-1", "port": port}
    calls: list[int] = []

    def flaky(fail_times):
        def probe(machine, cands):
            calls.append(1)
            if len(calls) <= fail_times:
                raise InfrastructureError("could not probe free ports on l-aaaa0001-n0: Connection reset by peer")
            return list(cands)
        return probe

    warned: list[str] = []
    ctx = SimpleNamespace(state=state, options=SimpleNamespace(trial_leaf=None),
                          events=SimpleNamespace(warn=warned.append))
    confirm_master_port(ctx, lease, probe=flaky(1))            # once: asked again, free
    assert (lease.meta[RENDEZVOUS]["port"], warned, len(calls)) == (port, [], 2)
    calls.clear()
    confirm_master_port(ctx, lease, probe=flaky(5))            # every time: kept, and said
    assert lease.meta[RENDEZVOUS]["port"] == port and len(calls) == 2
    assert warned == [f"could not re-check rendezvous port {port} on gpu-box-1 (could not probe free ports on "
                      "l-aaaa0001-n0: Connection reset by peer): the run keeps it"]
    assert PortReservations(state.db).taken("gpu-box-1") == {port}
