"""StateStore.status_records' machine documents, decoded in one pass (fleet/state/store.py
`_json_objects`): the same values as decoding each, one string per key for all of them, and a
damaged document is still refused as it was when each was decoded on its own."""
from __future__ import annotations

import json

import pytest

from fleet.state.store import _json_objects


def test_same_values_as_decoding_each_with_keys_shared():
    docs = [json.dumps({"id": f"m-{i}", "gpu_slots": [0, i], "provider_ref": {"dir": "/x", "n": None}})
            for i in range(5)]
    got = _json_objects(docs)
    assert got == [json.loads(d) for d in docs]
    first, second = (next(iter(d)) for d in got[:2])
    assert first is second           # the scanner's memo: one "id" for every document
    assert _json_objects([]) == []


@pytest.mark.parametrize("docs", [
    ['{"a": 1}, {"b": 2}', "{}"],            # two objects in one row: would shift every later machine
    ['{"a": "x', 'y"}'],                      # one object split over two rows
    ['{"a": 1}', ""],
])
def test_a_damaged_document_is_refused_as_before(docs):
    with pytest.raises(ValueError):
        [json.loads(d) for d in docs]
    with pytest.raises(ValueError):
        _json_objects(docs)


def test_a_row_that_is_not_an_object_is_decoded_on_its_own():
    assert _json_objects(['{"a": 1}', "[1]"]) == [{"a": 1}, [1]]
