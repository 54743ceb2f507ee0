"""`fleet down --all` sweeps machines no live lease owns, but a lease still leasing (another `fleet up`
in the same FLEET_HOME) has machines not recorded yet: none of `<lease>-n<rank>` is a leftover
(red-team finding: they could be ended under the other run)."""
from __future__ import annotations

from fleet.providers.fake import FakeProvider
from fleet.providers.local import LocalProvider


def test_a_leasing_leases_unrecorded_machine_directories_are_not_leftovers(fleet_home):
    machines = fleet_home / "machines"
    for name in ("l-aaaa1111-n0", "l-aaaa1111-n7", "l-bbbb2222-n0"):
        (machines / name).mkdir(parents=True)
    orphans = LocalProvider().orphan_dirs({"l-aaaa1111", "l-aaaa1111-n0"})   # n7 is not recorded yet
    assert [d.name for d in orphans] == ["l-bbbb2222-n0"]


def test_the_fake_provider_keeps_the_contract_too(fleet_home, tmp_path):
    import json
    provider = FakeProvider()
    provider.root.mkdir(parents=True, exist_ok=True)
    for lease in ("l-aaaa1111", "l-bbbb2222"):
        (provider.root / f"{lease}.json").write_text(json.dumps({"machines": {f"{lease}-n3": {}}}))
    assert provider.sweep({"l-aaaa1111"}) == ["l-bbbb2222-n3"]
