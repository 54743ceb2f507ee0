"""fleet/run/overlap.py: work beside staging runs at the same time, is always joined, and its
failure is raised where the block ends, never hiding the block's own."""
from __future__ import annotations

import threading
import time

import pytest

from fleet.run.overlap import Beside


def test_pieces_run_side_by_side_and_are_all_done_when_the_block_ends():
    started = threading.Barrier(3, timeout=30)   # both pieces and the block's body at once
    done = []

    def piece(name):
        started.wait()
        time.sleep(0.05)
        done.append(name)

    with Beside() as beside:
        beside.run(lambda: piece("a"), "a")
        beside.run(lambda: piece("b"), "b")
        started.wait()            # would time out (BrokenBarrierError) if the pieces ran one by one
    assert sorted(done) == ["a", "b"]


def test_a_failing_piece_is_raised_after_the_others_finished():
    finished = []

    def slow():
        time.sleep(0.1)
        finished.append(True)

    with pytest.raises(ValueError, match="no port"):
        with Beside() as beside:
            beside.run(lambda: (_ for _ in ()).throw(ValueError("no port")), "fails")
            beside.run(slow, "slow")
    assert finished == [True]


def test_the_blocks_own_error_wins_and_the_pieces_are_still_joined():
    finished = []

    def slow():
        time.sleep(0.1)
        finished.append(True)

    with pytest.raises(KeyError):
        with Beside() as beside:
            beside.run(slow, "slow")
            beside.run(lambda: (_ for _ in ()).throw(ValueError("hidden")), "fails")
            raise KeyError("staging failed")
    assert finished == [True]
