"""fleet/render/status_json.py writes exactly what json.dumps({"leases": views}, indent=2,
sort_keys=True) writes (the text `fleet status --json` has always printed), for every shape of view:
any number of machines, GPU slots and runs, odd strings, and views it does not know (then by the
general encoder)."""
from __future__ import annotations

import json
import random
from datetime import date, datetime, timezone

from fleet.lease_status import view
from fleet.render.status_json import dumps_leases, write_leases

STRINGS = ["", "x", 'é"\\\t\x00', "\u2603", "a\nb", "%s", "%(x)s", "}", ",\n", "\x00fleet\x00", "l-1"]


def _scalar(rng: random.Random):
    return rng.choice([None, True, False, 0, -5, 3.25, float("nan"), 10**30, *STRINGS])


def _view(rng: random.Random) -> dict:
    machines = [{"id": _scalar(rng), "rank": rng.randint(0, 3), "address": _scalar(rng),
                 "gpus": [rng.choice([0, 1, 7, "g"]) for _ in range(rng.randint(0, 3))],
                 "instance_type": _scalar(rng), "lifecycle": _scalar(rng), "zone": _scalar(rng),
                 "price_per_hour": _scalar(rng), "state": _scalar(rng), "observed_at": _scalar(rng),
                 "simulated_gpus": _scalar(rng), "isolation": _scalar(rng)} for _ in range(rng.randint(0, 3))]
    runs = [{"id": _scalar(rng), "status": _scalar(rng), "exit_code": rng.choice([None, 0, 1]),
             "detached": rng.random() < 0.5} for _ in range(rng.randint(0, 3))]
    for run in runs:
        if rng.random() < 0.3:
            run["supervisor_gone"] = _scalar(rng)      # fleet/state/store.py _mark_unsupervised
    return {"id": _scalar(rng), "provider": _scalar(rng), "template": _scalar(rng), "project": _scalar(rng),
            "user": _scalar(rng), "status": _scalar(rng), "health": _scalar(rng), "gpus": rng.randint(0, 8),
            "created_at": _scalar(rng), "deadline": _scalar(rng), "max_deadline": _scalar(rng),
            "keep_until": _scalar(rng), "machines": machines, "runs": runs}


def _same(views, default=None) -> None:
    """json.dumps's text, but strict JSON: NaN and infinity are written null."""
    from fleet.models import to_jsonable
    assert dumps_leases(views, default=default) == json.dumps({"leases": to_jsonable(views)}, indent=2,
                                                              sort_keys=True, default=default, allow_nan=False)


def test_same_text_as_the_standard_encoder_for_every_shape():
    rng = random.Random(20)
    _same([])
    for _ in range(500):
        _same([_view(rng) for _ in range(rng.randint(1, 6))])


def test_written_in_pieces_the_same_text():
    rng = random.Random(3)
    views = [_view(rng) for _ in range(23)]
    pieces: list[str] = []
    write_leases(views, pieces.append, block=4)
    assert len(pieces) > 6
    from fleet.models import to_jsonable
    assert "".join(pieces) == json.dumps({"leases": to_jsonable(views)}, indent=2, sort_keys=True, allow_nan=False)


def test_views_as_fleet_status_builds_them():
    now = datetime.now(timezone.utc)
    record = {"id": "l-1", "provider": "local", "template": "local-4gpu", "project": "p", "owner": "me",
              "status": "active", "created_at": now.isoformat(), "deadline": now.isoformat(),
              "max_deadline": now.isoformat(), "keep_until": None,
              "machines": [{"id": "l-1-n0", "node_rank": 0, "user": "u", "host": "127.0.0.1", "port": 22,
                            "gpu_slots": [0, 1], "price_per_hour": "0.5", "provider_ref": {"simulated_gpus": True}}],
              "runs": [{"id": "r-1", "status": "running", "exit_code": None, "detached": False}]}
    _same([view(record, {"l-1-n0": ("running", "", now.isoformat())}, now), view(record, None, now)])


def test_other_shapes_and_values_go_to_the_general_encoder():
    rng = random.Random(7)
    base = _view(rng)
    extra_key = {**base, "tags": {"a": [1, 2]}}
    missing_key = {k: v for k, v in base.items() if k != "runs"}
    nested_value = {**base, "health": {"why": ["x"]}}
    one_member = {**base, "project": ["p"]}           # one member: no separator would betray it
    odd_type = {**base, "deadline": date(2026, 1, 2)}
    odd_machine = {**base, "machines": [{"id": "m"}]}
    tuple_slots = {**base, "machines": [{**m, "gpus": (0, 1)} for m in base["machines"]] or [{"gpus": (0,)}]}
    for views in ([extra_key], [base, missing_key], [nested_value], [one_member], [odd_machine], [tuple_slots],
                  ["not a dict"]):
        _same(views)
    _same([base, odd_type], default=str)
