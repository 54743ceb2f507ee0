"""Run and sweep ids are made without asking the state, so they must not repeat: a sweep with
--parallel 32 starts 32 trial runs within one second (with 2 random bytes a second, about 1 in 130
such sweeps had two trials with one id: the second failed with a UNIQUE constraint error, and an
attached `fleet up` with a taken id left its lease 'leasing'); two sweeps started in the same second
in one project shared runs/<sweep-id>/."""
from __future__ import annotations

from fleet.ids import new_run_id
from fleet.sweep.spec import new_sweep_id


def test_run_ids_made_in_the_same_second_do_not_repeat():
    ids = [new_run_id() for _ in range(3000)]
    assert len(set(ids)) == len(ids)


def test_sweep_ids_made_in_the_same_second_do_not_repeat():
    ids = [new_sweep_id() for _ in range(3000)]
    assert len(set(ids)) == len(ids)
