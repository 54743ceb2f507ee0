"""fleet/render/indented_json.py writes exactly what json.dumps(indent=2, sort_keys=True) writes
(`fleet status --json` and every other --json promise that text), for any JSON-able value."""
from __future__ import annotations

import json
import random
from datetime import date

from fleet.render.indented_json import dumps


def _value(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth < 4 and pick < 0.25:
        return {rng.choice(["a", "b", "ß", "z\n", "", "k" + str(rng.randint(0, 50))]): _value(rng, depth + 1)
                for _ in range(rng.randint(0, 5))}
    if depth < 4 and pick < 0.45:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if pick < 0.5:
        return (1, [2, {"x": None}])
    return rng.choice([None, True, False, 0, -5, 3.25, float("nan"), float("-inf"), 1e300, 10**30, "x",
                       'é"\\\t\x00', "", "\u2603", date(2020, 1, 2)])


def test_same_text_as_the_standard_encoder():
    rng = random.Random(20)
    for _ in range(3000):
        value = _value(rng)
        assert dumps(value, default=str) == json.dumps(value, indent=2, sort_keys=True, default=str)


def test_shapes_fleet_status_prints():
    view = {"leases": [{"id": "l-1", "gpus": 2, "keep_until": None, "machines": [
        {"gpus": [0, 1], "state": "running", "simulated_gpus": True, "price_per_hour": "0.5"}],
        "runs": [{"id": "r-1", "exit_code": None, "detached": False}], "meta": {}, "tags": []}]}
    assert dumps(view) == json.dumps(view, indent=2, sort_keys=True)
    assert dumps({"leases": []}) == json.dumps({"leases": []}, indent=2, sort_keys=True)
    for scalar in (None, True, 7, 2.5, "s"):
        assert dumps(scalar) == json.dumps(scalar, indent=2, sort_keys=True)


def test_non_string_keys_as_the_standard_encoder_writes_them():
    value = {"outer": {1: "a", 2: [3]}}
    assert dumps(value) == json.dumps(value, indent=2, sort_keys=True)
