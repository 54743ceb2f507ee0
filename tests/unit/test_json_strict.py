"""Every `--json` is strict JSON (a red-team finding: a machine document's NaN, a run's exit code
stored as 9e999 or an infinite rollup figure came out as NaN/Infinity, which strict parsers refuse).
Such figures are written null."""
from __future__ import annotations

import json

import pytest

from fleet.render import Column, Records, Table
from fleet.render.data import json_text, to_json
from fleet.render.status_json import dumps_leases


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("odd", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_figures_are_null_in_every_json(odd):
    assert _strict(json_text({"exit_code": odd, "ok": 1.5})) == {"exit_code": None, "ok": 1.5}
    table = Table([Column("p"), Column("util")], [("a", "x")],
                  records=Records(("p", "util"), [{"p": "a", "util": odd}], total={"p": "total", "util": odd}))
    data = _strict(to_json(table))
    assert data["rows"][0]["util"] is None and data["total"]["util"] is None
    view = {"id": "l-1", "gpu_slots": [odd, 1], "status": "active", "exit_code": odd}
    assert _strict(dumps_leases([view]))["leases"][0]["exit_code"] is None
