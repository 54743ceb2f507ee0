"""Slurm leases under `fleet reap` (fleet/providers/slurm/handoff.py): released from any computer that
has the key to the login node the lease recorded; one made on the login node itself (no login
recorded) only where Slurm's tools run; and a lost run supervised from the login node is resumed
there, chosen by capability (lost_resume._where_next), never by the provider's name."""
from __future__ import annotations

from datetime import timedelta

from fleet.models import Lease, utcnow
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings


def _lease(meta: dict) -> Lease:
    now = utcnow()
    return Lease(id="l-1", provider="slurm", template="slurm-1gpu", machines=[], created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(minutes=10), user="u", meta=meta)


def test_a_lease_made_through_a_login_node_is_released_wherever_its_key_is(tmp_path):
    from fleet.providers.capabilities import ReleasedFromAnywhere
    provider = SlurmProvider(SlurmSettings())
    assert isinstance(provider, ReleasedFromAnywhere)
    key = tmp_path / "id_ed25519"
    key.write_text("k")
    assert provider.why_not_released_here(_lease({"slurm_login": "me@login", "slurm_identity": str(key)})) is None
    assert provider.why_not_released_here(_lease({"slurm_login": "me@login"})) is None   # the ssh agent's key
    why = provider.why_not_released_here(_lease({"slurm_login": "me@login", "slurm_identity": str(tmp_path / "gone")}))
    assert why == (f"the key to its login node me@login ({tmp_path / 'gone'}) is not on this computer: "
                   "run `fleet reap` where it is"), why


def test_a_lease_made_on_the_login_node_itself_is_released_only_where_slurms_tools_run(tmp_path, monkeypatch):
    provider = SlurmProvider(SlurmSettings())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    why = provider.why_not_released_here(_lease({}))
    assert why == ("it was made on the cluster's login node itself (no [slurm] login recorded) and Slurm's tools "
                   "(squeue, scancel, sacct) are not on this computer: run `fleet reap` on that login node"), why
    for tool in ("squeue", "scancel", "sacct"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    assert provider.why_not_released_here(_lease({})) is None
    # This computer reaches a cluster through a login of its own: maybe not the lease's.
    elsewhere = SlurmProvider(SlurmSettings(login="me@other"))
    assert "no [slurm] login recorded" in elsewhere.why_not_released_here(_lease({}))


def test_where_the_next_attempt_is_supervised_is_chosen_by_capability():
    from fleet.models import Machine
    from fleet.run.lost_resume import LostRunResume, _where_next
    node0 = Machine(id="l-1-n0", lease_id="l-1", node_rank=0, host="h", port=22, user="u", key_path="k",
                    host_key="", workdir="/w")
    assert _where_next("slurm", "login node", None) == "login node"
    assert _where_next("slurm", "this computer", None) is None     # fleet ran on the login node itself
    assert _where_next("ssh", "l-1-n0", node0) == "node 0"
    assert _where_next("ssh", "login node", None) is None           # team hosts have no login node
    assert _where_next("local", "l-1-n0", node0) is None
    assert _where_next("no-such-provider", "login node", None) is None
    done = LostRunResume("r-x", True, attempt=2, next_run_id="r-x-a2", lease_id="l-2", supervised_on="login node")
    assert "supervised from the cluster's login node: follow it with `fleet attach r-x`" in done.line()
    assert done.to_json()["supervised_on"] == "login node"
    assert "supervised_on" not in LostRunResume("r-x", True, attempt=2, next_run_id="r-x-a2").to_json()
