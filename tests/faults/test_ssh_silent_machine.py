"""A machine whose network is cut while fleet waits on its SSH connection (paramiko, the transport of
runs, status and release): every wait on that connection must end within about a minute (here,
with the probe intervals shortened, seconds), with MachineUnreachable, not after TCP's ~15 minutes
of retries. Packets are dropped silently (the namespace's link set down), as in a partition."""
from __future__ import annotations

import threading

import pytest

from fleet.errors import MachineUnreachable
from fleet.remote import ssh

from .harness import ending
from .netns import Link, NetnsProvider, cannot_make_namespaces

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cut_machine(fleet_home, monkeypatch):
    """(machine, link) of a one-machine lease whose sshd lives behind `link`; released after."""
    from fleet.ids import new_lease_id
    from fleet.plan import make_plan
    reason = cannot_make_namespaces()
    if reason:
        pytest.skip(f"cannot cut a machine's network here: {reason}")
    monkeypatch.setattr(ssh, "KEEPALIVE_S", 1, raising=False)
    monkeypatch.setattr(ssh, "DEAD_AFTER_S", 3, raising=False)
    link = Link()
    provider = NetnsProvider([link])
    lease = None
    try:
        plan = make_plan(provider="local", template=provider.template("local-1gpu"), gpus=1, max_duration_s=600,
                         heartbeat_ttl_s=120, project="test", user="tester")
        lease = provider.lease(plan, new_lease_id(), 120)
        yield lease.machines[0], link
    finally:
        if lease is not None:
            provider.release(lease)
        link.destroy()


def test_a_command_waiting_on_a_cut_machine_ends_as_unreachable(cut_machine):
    machine, link = cut_machine
    session = ssh.open_connection(machine, timeout=10)
    try:
        assert session.run(["echo", "up"]).stdout.strip() == "up"
        timer = threading.Timer(1.0, link.cut)
        timer.start()
        took, error, hung = ending(lambda: session.run(["sleep", "100"], timeout=None))
        timer.join()
        assert not hung, "the command was still waited on 40 s after the machine's network was cut"
        assert isinstance(error, MachineUnreachable), repr(error)
        assert machine.id in str(error)
        assert took < 20
    finally:
        session.close()


def test_an_sftp_transfer_from_a_cut_machine_ends(cut_machine, tmp_path):
    machine, link = cut_machine
    session = ssh.open_connection(machine, timeout=10)
    try:
        session.run(["sh", "-c", f"head -c 67108864 /dev/urandom > {machine.workdir}/big"])
        got = [0]

        def pull():
            with session.transfer() as sftp, sftp.open(f"{machine.workdir}/big", "rb") as f:
                while data := f.read(1 << 20):
                    got[0] += len(data)
                    if got[0] == 4 << 20:
                        link.cut()
        took, error, hung = ending(pull)
        assert got[0] >= 4 << 20, "the cut never happened"
        assert not hung, "the SFTP transfer was still waited on 40 s after the machine's network was cut"
        assert isinstance(error, MachineUnreachable), repr(error)
        assert machine.id in str(error) and took < 25
    finally:
        session.close()
