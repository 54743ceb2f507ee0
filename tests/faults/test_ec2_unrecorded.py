"""AWS: instances launched by a controller killed inside the provider's lease call.

The controller dies after RunInstances and before it could report the instances (their only trace
is the fleet:lease tag). `fleet down` (the library call the CLI makes, with the provider built as
the CLI builds it: no stack outputs, the region from the lease record) must terminate them and
leave one closed ledger segment per instance, billed from its LaunchTime for no longer than the
first deadline. Asked of moto with a clean client afterwards: nothing alive.
"""
from __future__ import annotations

import hashlib
import time

import pytest

from fleet.plan import make_plan
from tests.fixtures.aws import NoConnectAddressMap, fast_sleep, point_boto3_at, reset_moto

from .ec2 import alive_instances, fast_retries

pytestmark = pytest.mark.timeout(120)


class Killed(KeyboardInterrupt):
    """Stands for SIGKILL: raised from on_machine, with the provider's own cleanup disabled."""


@pytest.fixture(scope="module")
def stack(moto_server):
    from fleet.providers.aws.outputs import load_outputs
    from fleet.providers.aws.sandbox import create_stack
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(mp, moto_server)
        yield load_outputs(create_stack())
    reset_moto(moto_server)


def test_instances_launched_but_never_reported_are_billed_and_terminated_by_down(stack, fleet_home, moto_server,
                                                                                 monkeypatch, request):
    from fleet.leases import down
    from fleet.providers.aws.provider import AWSProvider
    from fleet.state import open_state
    point_boto3_at(monkeypatch, moto_server)
    fast_retries(monkeypatch)
    project = "u-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
    aws = AWSProvider(outputs=stack, sandbox=NoConnectAddressMap(), sleep=fast_sleep, ready_timeout_s=20)
    plan = make_plan(provider="aws", template=aws.templates()["aws-4gpu"], gpus=8, max_duration_s=600,
                     heartbeat_ttl_s=60, project=project, user="faults")
    lease_id, first_s, rate = "l-unrec01", 1, 3_000_000
    state = open_state()
    # What fleet.up records before leasing (the price from the budget gate, the region from the provider).
    state.begin_lease(lease_id, plan, deadline_s=first_s,
                      meta={**aws.lease_meta(), "first_deadline_s": first_s,
                            "price": {"per_hour_micro": rate, "source": "test price", "shadow": False}})

    def killed(machine):
        raise Killed()

    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        mp.setattr(aws, "_cleanup", lambda _lease_id: None)   # a killed process cleans nothing up
        aws.lease(plan, lease_id, first_s, on_machine=killed)
    launched = alive_instances(project)
    assert len(launched) == 2, launched
    time.sleep(first_s + 0.5)      # past the first deadline: the bill must stop there, not at `down`

    assert down([], all_leases=True, all_users=True) == [lease_id]
    assert alive_instances(project) == []
    rows = state.db.execute("SELECT machine_id, kind, duration_ms, cost_micro, rate_micro, run_id, gpus "
                            "FROM ledger WHERE lease_id = ? ORDER BY id", (lease_id,))
    assert sorted({r["machine_id"] for r in rows}) == sorted(launched)
    for iid in launched:
        mine = [r for r in rows if r["machine_id"] == iid]
        assert [r["kind"] for r in mine] == ["open", "close"], mine
        assert sum(r["duration_ms"] for r in mine) == first_s * 1000, mine      # LaunchTime + first deadline
        assert sum(r["cost_micro"] for r in mine) == rate * first_s // 3600, mine
        assert mine[0]["rate_micro"] == rate and mine[0]["gpus"] == 4
    # A second `down` neither bills again nor fails.
    assert down([], all_leases=True, all_users=True) == []
    assert len(state.db.execute("SELECT id FROM ledger WHERE lease_id = ?", (lease_id,))) == len(rows)
