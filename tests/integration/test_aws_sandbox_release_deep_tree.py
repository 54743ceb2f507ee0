"""An AWS sandbox machine whose job left a directory tree deeper than Python's stack is still released:
its directory was deleted with shutil.rmtree, which recurses once per level, so `fleet down` of the
lease failed on RecursionError (ignore_errors does not cover it) and the machine's directory stayed."""
from __future__ import annotations

import pytest

from fleet.plan import make_plan
from fleet.providers.aws.provider import AWSProvider
from fleet.providers.aws.sandbox import LEASE_FILE, Sandbox
from tests.fixtures.aws import fast_sleep, provider_on_a_new_stack
from tests.fixtures.deep_tree import deep_tree, remove


@pytest.fixture
def provider(moto_server, fleet_home):
    with provider_on_a_new_stack(moto_server) as made:
        yield made


def test_a_sandbox_machine_holding_a_tree_deeper_than_the_stack_is_released(provider, tmp_path):
    plan = make_plan(provider="aws", mix=provider.offers("aws-1gpu", 1)[0], max_duration_s=600,
                     heartbeat_ttl_s=60, project="proj", user="alice")
    lease = provider.lease(plan, "l-d33p7733", 60)
    sandbox = Sandbox(root=tmp_path / "sandbox" / "machines")
    machine = sandbox.root / lease.machines[0].id      # its loopback machine, where bind makes it
    machine.mkdir()
    (machine / LEASE_FILE).write_text(lease.id)
    deep_tree(machine / "work" / "outputs")
    try:
        AWSProvider(outputs=provider.outputs, sandbox=sandbox, sleep=fast_sleep, ready_timeout_s=30).release(lease)
        assert not machine.exists(), "the sandbox machine's directory was left behind"
    finally:
        remove(machine)
