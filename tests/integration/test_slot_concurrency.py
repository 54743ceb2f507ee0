"""20 concurrent leases of 2 GPUs against 4 hosts × 4 slots, on PostgreSQL and on SQLite.

Never a slot given twice; every request served or cleanly refused (CapacityError, exit code 10);
everything released at the end. Two independent witnesses of "never twice": an in-memory ledger of
who holds which slot (checked the moment a lease returns, emptied before its release), and the
database's own history (no two reservations of a slot overlap in time).
"""
from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

import pytest

from fleet.config.model import Config
from fleet.errors import CapacityError, ExitCode
from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.ssh import SSHHostsProvider
from fleet.providers.ssh.settings import SSHSettings
from fleet.state import open_state
from tests.conftest import processes_under
from tests.fixtures.ssh_hosts import PYTHON, HostFarm

REQUESTS, GPUS, HOSTS, SLOTS = 20, 2, 4, 4


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = HostFarm(tmp_path_factory.mktemp("slot-hosts"))
    for i in range(HOSTS):
        farm.start(f"g{i}")
    yield farm
    farm.stop()
    assert not processes_under(farm.base / "hosts")


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_concurrent_leases_never_share_a_slot(farm, state_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(farm.home))
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "fleet-home"))
    config = Config(path=None, base_dir=tmp_path, project="p", name="p", command="true", provider="ssh",
                    template="hosts", python=PYTHON, state_url=state_url,
                    provider_settings={"ssh": SSHSettings(hosts=farm.configs(gpus=SLOTS))})
    held: dict[tuple[str, int], str] = {}
    ledger_lock = threading.Lock()
    outcomes: dict[str, list] = defaultdict(list)
    start = threading.Barrier(REQUESTS)

    def one(i: int) -> None:
        state = open_state(state_url)          # as a separate `fleet up` would
        provider = SSHHostsProvider(config=config, state=state)
        plan = make_plan(provider="ssh", template=provider.templates()["hosts"], gpus=GPUS, max_duration_s=600,
                         heartbeat_ttl_s=60, project="p", user=f"user{i % 3}")
        lease_id = new_lease_id()
        try:
            start.wait(30)
            try:
                lease = provider.lease(plan, lease_id, 60)
            except CapacityError as exc:
                outcomes["refused"].append((exc.exit_code, exc.one_line()))
                return
            slots = [(m.provider_ref["host"], s) for m in lease.machines for s in m.gpu_slots]
            with ledger_lock:
                clash = [s for s in slots if s in held]
                for s in slots:
                    held[s] = lease_id
            if clash:
                outcomes["clash"].append((lease_id, clash))
            outcomes["served"].append((lease_id, slots))
            time.sleep(random.uniform(0.1, 0.5))   # hold the GPUs a moment, as a run would
            with ledger_lock:
                for s in slots:
                    if held.get(s) == lease_id:
                        del held[s]
            provider.release(lease)
        except Exception as exc:  # noqa: BLE001 — reported by the assertions below
            outcomes["error"].append(f"{type(exc).__name__}: {exc}")
        finally:
            state.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "a lease hung"
    assert outcomes["error"] == []
    assert outcomes["clash"] == [], "a slot was given to two leases at once"
    served, refused = outcomes["served"], outcomes["refused"]
    assert len(served) + len(refused) == REQUESTS
    assert len(served) >= HOSTS * SLOTS // GPUS          # the first 8 always fit
    for code, message in refused:
        assert code == ExitCode.INFRASTRUCTURE and "not enough free GPU slots" in message and "\n" not in message
    for _, slots in served:
        assert len(slots) == GPUS and len({h for h, _ in slots}) == 1   # `hosts` template: one host

    check = open_state(state_url)
    try:
        db = check.db
        assert db.execute("SELECT COUNT(*) AS n FROM gpu_slots WHERE released_at IS NULL")[0]["n"] == 0
        rows = db.execute("SELECT host, slot, reserved_at, released_at FROM gpu_slots ORDER BY host, slot, reserved_at")
        assert len(rows) == GPUS * len(served)
        for prev, cur in zip(rows, rows[1:]):
            if (prev["host"], prev["slot"]) == (cur["host"], cur["slot"]):
                assert prev["released_at"] <= cur["reserved_at"], f"overlapping reservations of {cur}"
        assert {r["name"] for r in db.execute("SELECT name FROM users")} <= {"user0", "user1", "user2"}
    finally:
        check.close()
    leftovers = [p for p in processes_under(farm.base / "hosts") if "agent.py" in p]
    assert leftovers == [], "watchdogs left running after release"
