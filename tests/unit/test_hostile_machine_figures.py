"""Figures a machine reports are not trusted (red-team findings). Telemetry: utilisation of NaN,
infinity or 1e300, or `"gpus": 5`, made every budget tick raise before it wrote its ledger row, so
no cost was recorded, no budget was checked and the segment stayed open; now such figures are left
out, the tick writes its cost whatever the telemetry does, and a telemetry file without line ends is
skipped in bounded reads. `extend`'s remaining time: a nonsense figure counts as saying nothing."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from fleet.money.budget import Price, to_micro
from fleet.money.ledger import Ledger
from fleet.money.metering import RunMeter
from fleet.state import open_state
from fleet.telemetry import READ_MAX, TelemetryFeed, TelemetryFile, gpu_utils
from tests.fixtures.ledger import T0, FakeClock, _Lease, _Machine


@pytest.mark.parametrize("util", ["nan", "inf", "-inf", 1e300, "1e999"])
def test_a_machines_nonsense_utilisation_never_stops_its_cost_being_recorded(tmp_path, util):
    state = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    clock = FakeClock(T0)
    ledger = Ledger(state.db, clock=clock)
    tel = tmp_path / "node-0.jsonl"
    tel.write_text("")
    meter = RunMeter(ledger, None, clock=clock, telemetry=TelemetryFeed({"m0": tel}).tick, persist_every_s=0)
    meter.start(_Lease("l1", "p", "u", "t", "aws", [_Machine("m0", (0,))]),
                Price(to_micro(Decimal(36)), "test", False), run_id="r1", at=T0)
    for _ in range(3):
        clock.advance(60)
        with tel.open("a") as f:
            f.write(json.dumps({"gpus": [{"util": util}, {"util": 50}]}) + "\n")
        meter.tick()
    assert meter.finish() == to_micro("1.80")                       # 3 minutes at $36/h
    assert ledger.open_segments("l1") == []
    assert ledger.spent_micro(project="p") == to_micro("1.80")
    state.close()


def test_a_telemetry_feed_that_raises_still_lets_the_tick_write_its_row(tmp_path):
    state = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    clock = FakeClock(T0)
    ledger = Ledger(state.db, clock=clock)

    def broken(seconds):
        raise OverflowError("a machine's figure")
    meter = RunMeter(ledger, None, clock=clock, telemetry=broken, persist_every_s=0)
    meter.start(_Lease("l1", "p", "u", "t", "aws", [_Machine("m0", (0,))]),
                Price(to_micro(Decimal(36)), "test", False), run_id="r1", at=T0)
    clock.advance(100)
    meter.tick()
    assert ledger.spent_micro(project="p") == to_micro(1)
    state.close()


@pytest.mark.parametrize("sample, utils", [({"gpus": 5}, []), ({"gpus": [{"util": 250}]}, [100.0]),
                                           ({"gpus": [{"util": -3}, 7]}, [0.0]), ({"gpus": [{"util": "42"}]}, [42.0])])
def test_only_finite_utilisations_count_held_to_0_100(sample, utils):
    assert gpu_utils(sample) == utils


def test_a_telemetry_file_without_line_ends_is_skipped_in_bounded_reads(tmp_path):
    path = tmp_path / "node-0.jsonl"
    path.write_bytes(b"x" * (READ_MAX + 10) + b"\n" + json.dumps({"gpus": [{"util": 9}]}).encode() + b"\n")
    tf = TelemetryFile(path)
    seen = []
    for _ in range(4):
        seen += tf.read_new()
    assert seen == [{"gpus": [{"util": 9}]}] and tf.bad_lines >= 1


@pytest.mark.parametrize("answer", ['{"remaining_s": NaN}', '{"remaining_s": -1e9}', '{"remaining_s": 1e300}',
                                    '{"remaining_s": "soon"}', '[1]', ''])
def test_a_machines_nonsense_remaining_time_counts_as_saying_nothing(answer):
    """`fleet extend`/`--keep`: NaN raised, -1e9 recorded the lease's deadline in 1995 (closing its
    kept time while the machines ran on)."""
    from fleet.run.keep import _remaining_s
    assert _remaining_s(answer, 600.0) == 600.0
    assert _remaining_s('{"remaining_s": 3600}', 600.0) == 3600.0     # a later deadline the agent kept
