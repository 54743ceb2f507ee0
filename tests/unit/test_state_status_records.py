"""StateStore.status_records' machine documents, decoded in one pass (fleet/state/documents.py
`json_objects`): the same values as decoding each, one string per key for all of them, and a
damaged document is refused, named, as when each is decoded on its own."""
from __future__ import annotations

import json

import pytest

from fleet.state.documents import CorruptRecord, json_objects


def test_same_values_as_decoding_each_with_keys_shared():
    docs = [json.dumps({"id": f"m-{i}", "gpu_slots": [0, i], "provider_ref": {"dir": "/x", "n": None}})
            for i in range(5)]
    got = json_objects(docs, "a machine's record")
    assert got == [json.loads(d) for d in docs]
    first, second = (next(iter(d)) for d in got[:2])
    assert first is second           # the scanner's memo: one "id" for every document
    assert json_objects([], "a machine's record") == []
    assert json_objects(docs[:1], "a machine's record") == [json.loads(docs[0])]
    assert docs == [json.dumps({"id": f"m-{i}", "gpu_slots": [0, i], "provider_ref": {"dir": "/x", "n": None}})
                    for i in range(5)]       # the caller's list is left as it was


@pytest.mark.parametrize("docs", [
    ['{"a": 1}, {"b": 2}', "{}"],            # two objects in one row: would shift every later machine
    ['{"a": "x', 'y"}'],                      # one object split over two rows
    ['{"a": 1}', ""],
])
def test_a_damaged_document_is_refused_as_before(docs):
    with pytest.raises(ValueError):
        [json.loads(d) for d in docs]
    with pytest.raises(CorruptRecord, match="state: a machine's record is"):
        json_objects(docs, "a machine's record")


def test_a_row_that_is_not_an_object_is_refused_by_name():
    with pytest.raises(CorruptRecord, match="state: a machine's record is not a JSON object"):
        json_objects(['{"a": 1}', "[1]"], "a machine's record")


def test_a_leases_machines_come_in_rank_order(fleet_home):
    from datetime import timedelta

    from fleet.models import Lease, Machine, utcnow
    from fleet.state import open_state
    now = utcnow()
    machines = [Machine(id=f"l-order-n{rank}", lease_id="l-order", node_rank=rank, host="127.0.0.1", port=22,
                        user="u", key_path="/nonexistent", host_key="", workdir="/nonexistent", gpu_slots=(0,),
                        provider_ref={}) for rank in (2, 0, 3, 1)]      # stored in this order
    state = open_state()
    try:
        state.save_lease(Lease(id="l-order", provider="fake", template="t", machines=machines, created_at=now,
                               deadline=now + timedelta(hours=1), max_deadline=now + timedelta(hours=2),
                               project="p", user="u"))
        [record] = state.status_records()
    finally:
        state.close()
    assert [(m["id"], m["node_rank"]) for m in record["machines"]] == [(f"l-order-n{r}", r) for r in range(4)]
