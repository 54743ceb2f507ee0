"""fleet/status_table.py: a lease's "launched" cell, whose one-machine form (most leases) skips the
grouping, reads as the grouped form always did; the machines and runs cells."""
from __future__ import annotations

import itertools

from fleet.status_table import launched, status_table


def _grouped(view: dict) -> str:
    """The text every lease had before the one-machine shortcut (its reference)."""
    groups: dict = {}
    for m in view["machines"]:
        key = (m.get("instance_type") or view["template"], m.get("lifecycle", "on-demand"), m.get("zone", ""))
        groups[key] = groups.get(key, 0) + 1
    if not groups:
        return view["template"]
    parts = [f"{n} × {kind}" + (" spot" if lifecycle == "spot" else "") + (f" {zone}" if zone else "")
             for (kind, lifecycle, zone), n in groups.items()]
    kinds = {kind for kind, _, _ in groups}
    return ", ".join(parts) + ("" if kinds == {view["template"]} else f" ({view['template']})")


def test_one_machine_reads_as_the_grouped_form():
    for kind, lifecycle, zone in itertools.product([None, "", "g6.xlarge", "aws-1gpu"], [None, "spot", "on-demand"],
                                                   [None, "", "us-east-1a"]):
        machine = {k: v for k, v in (("instance_type", kind), ("lifecycle", lifecycle), ("zone", zone)) if v is not None}
        view = {"template": "aws-1gpu", "machines": [machine]}
        assert launched(view) == _grouped(view), machine
    two = {"template": "t", "machines": [{"instance_type": "a", "lifecycle": "spot"}, {"instance_type": "a"}]}
    assert launched(two) == _grouped(two) == "1 × a spot, 1 × a (t)"
    assert launched({"template": "t", "machines": []}) == "t"


def test_machines_and_runs_cells():
    view = {"id": "l-1", "provider": "local", "template": "t", "user": "u", "health": "degraded", "gpus": 2,
            "deadline": None, "machines": [{"state": "running"}, {"state": "gone"}, {"state": "running"}],
            "runs": [{"id": "r-1", "status": "running", "supervisor_gone": "silent"}, {"id": "r-2", "status": "ok"},
                     {"id": "r-3", "status": "ok"}]}
    [row] = status_table([view]).rows
    assert row.cells[5] == "2/3"
    assert row.cells[8] == "r-1 (running, supervisor gone), r-2 (ok)"
    [row] = status_table([{**view, "runs": []}]).rows
    assert row.cells[8] == "-"
