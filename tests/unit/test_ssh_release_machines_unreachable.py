"""A sweep giving back one machine of a team-host lease whose host does not answer
(SSHHostsProvider.release_machines): as for a whole lease's release, the host is marked down so no
new lease is placed on its freed slots while the machine's processes may still hold the GPUs until
their watchdog's deadline. Before, the slots were freed and the host left 'up': the next lease
(anyone's) was placed there and failed, or shared the GPUs with what still ran."""
from __future__ import annotations

from datetime import timedelta

from fleet.errors import MachineUnreachable
from fleet.models import Lease, Machine, utcnow
from fleet.providers.ssh import SSHHostsProvider
from fleet.providers.ssh.hosts import Inventory
from fleet.providers.ssh.settings import HostConfig
from fleet.state import open_state


def test_an_unreachable_machine_given_back_marks_its_host_down(fleet_home, monkeypatch):
    state = open_state()
    provider = SSHHostsProvider(state=state, hosts=[HostConfig(address="127.0.0.1", name="h1", gpus=2),
                                                    HostConfig(address="127.0.0.2", name="h2", gpus=2)])
    provider.inventory().sync_config_hosts("tester")
    now = utcnow()
    machines = [Machine(id=f"L-n{i}", lease_id="L", node_rank=i, host=f"127.0.0.{i + 1}", port=22, user="u",
                        key_path="k", host_key="h", workdir=f"/w/L/L-n{i}", gpu_slots=(0,),
                        provider_ref={"host": f"h{i + 1}"}) for i in range(2)]
    lease = Lease(id="L", provider="ssh", template="hosts", machines=machines, created_at=now,
                  deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))
    monkeypatch.setattr(provider, "_stop_all", lambda ms, revoke="", staying=(): [
        MachineUnreachable(f"{m.id}: no route to host") for m in ms])
    provider.release_machines(lease, ["L-n1"])       # does not raise: its watchdog ends it at its deadline
    status = {h.name: h.status for h in Inventory(state.db).list()}
    assert status["h2"] == "down" and status["h1"] != "down"
    state.close()
