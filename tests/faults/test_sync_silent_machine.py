"""A machine that goes silent during a sync, without closing anything: its sync helper frozen (sshd
still answers), or its network cut (packets dropped, as in a partition). The sync must end with a
clear error within its timeout, not wait forever on a pipe that will never drain or a line that
will never come. OpenSSH transport (the default where `ssh` is installed)."""
from __future__ import annotations

import random

import pytest

from fleet.errors import MachineUnreachable
from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots import sync as sync_module
from fleet.snapshots.sync import Target, sync_machine
from fleet.snapshots.sync_channel import OpenSSHChannel
from fleet.snapshots.sync_remote import data_dir

from .harness import ending
from .netns import Link, NetnsProvider, cannot_make_namespaces

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 3.0


def _data(tmp_path, megabytes: int):
    rng = random.Random(5)
    src = tmp_path / "d"
    src.mkdir()
    for i in range(megabytes):
        (src / f"f{i:03d}.bin").write_bytes(rng.randbytes(1 << 20))
    store = open_store(None)
    return store, create_snapshot(src, store)


def test_a_frozen_sync_helper_ends_the_sync_with_a_clear_error(fleet_home, local_lease, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_SYNC_TRANSPORT", "openssh")
    store, snap = _data(tmp_path, 2)
    machine = local_lease().machines[0]
    real = sync_module.helper_command
    # the helper's shell stops itself before it starts: it never reads or answers, sshd lives on
    monkeypatch.setattr(sync_module, "helper_command", lambda m, c=None: "kill -STOP $$; " + real(m, c))
    took, error, hung = ending(lambda: sync_machine(
        machine, store, [Target(data_dir(machine, "d"), [snap.id])], timeout=TIMEOUT))
    assert not hung, "the sync was still waiting on the frozen helper after 40 s"
    assert isinstance(error, MachineUnreachable), repr(error)
    assert "gave no sign of life for 3 s" in str(error) and machine.id in str(error)
    assert took < TIMEOUT + 10


def test_a_helper_that_stops_reading_ends_the_send_within_the_timeout(fleet_home, local_lease):
    """What the controller writes stops draining (the helper stuck, the link gone): the write waits
    `timeout`, then gives up; it is never a write blocked for good."""
    machine = local_lease().machines[0]
    ch = OpenSSHChannel(machine, "exec sleep 100", TIMEOUT)      # never reads its input
    try:
        took, error, hung = ending(lambda: ch.send([b"x" * (1 << 20)] * 64))
        assert not hung, "the send was still blocked after 40 s"
        assert isinstance(error, MachineUnreachable) and "not reading" in str(error), repr(error)
        assert took < TIMEOUT + 15
    finally:
        ch.close()


def test_a_helper_busy_building_but_ticking_is_waited_for_however_long(fleet_home, local_lease):
    """A helper that stops reading while it builds (from S3, from the host cache) says it is alive
    every few seconds: those ticks count, however long the pipe stays full."""
    machine = local_lease().machines[0]
    busy = ("for i in 1 2 3 4 5 6 7; do echo '{\"fetching\": true}'; sleep 0.7; done; "
            "head -c 50331648 > /dev/null; echo '{\"ok\": true}'")
    ch = OpenSSHChannel(machine, busy, 2.0)
    try:
        took, error, hung = ending(lambda: ch.send([b"x" * (1 << 20)] * 48))
        assert error is None and not hung, repr(error)
        assert took > 2.0, "the pipe never filled: this did not test a wait"
        answers = []
        while not answers or answers[-1].get("fetching"):
            answers.append(ch.reply())
        assert answers[-1] == {"ok": True} and len(answers) == 8
    finally:
        ch.close()


@pytest.fixture
def link():
    reason = cannot_make_namespaces()
    if reason:
        pytest.skip(f"cannot cut a machine's network here: {reason}")
    made = Link()
    yield made
    made.destroy()


def test_a_network_cut_mid_sync_ends_it_within_the_timeout(fleet_home, link, tmp_path, monkeypatch):
    from fleet.ids import new_lease_id
    from fleet.plan import make_plan
    monkeypatch.setenv("FLEET_SYNC_TRANSPORT", "openssh")
    store, snap = _data(tmp_path, 48)
    provider = NetnsProvider([link])
    plan = make_plan(provider="local", template=provider.template("local-1gpu"), gpus=1, max_duration_s=600,
                     heartbeat_ttl_s=120, project="test", user="tester")
    lease = provider.lease(plan, new_lease_id(), 120)
    try:
        machine = lease.machines[0]
        sent = [0]

        def progress(n):
            sent[0] += n
            if sent[0] >= 4 << 20 and sent[0] - n < 4 << 20:
                link.cut()                 # mid-push: what is still to send can never drain
        took, error, hung = ending(lambda: sync_machine(
            machine, store, [Target(data_dir(machine, "d"), [snap.id])], timeout=TIMEOUT, progress=progress))
        assert sent[0] >= 4 << 20, "the cut never happened: the push did not get going"
        assert not hung, "the sync was still waiting on the cut machine after 40 s"
        assert isinstance(error, MachineUnreachable), repr(error)
        assert machine.id in str(error)
        assert took < 30
    finally:
        provider.release(lease)
