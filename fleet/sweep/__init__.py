"""Sweeps: many trials of one experiment on a warm pool of machines, under one budget.

    from fleet.sweep import SweepSpec, plan_trials, parse_param, sweep
    trials = plan_trials([parse_param("lr=1e-3,3e-4"), parse_param("batch=32,64")])
    summary = sweep(config, SweepSpec(command="python train.py --lr {lr}", trials=tuple(trials), parallel=2))

params.py (grid / seeded random trials), spec.py, pool.py (the pool run), scheduler.py (slots and
the budget check), trials.py (one trial: the pipeline on a PoolLease), reset.py, summary.py.
"""
from .params import Param, Trial, parse_param, plan_trials
from .pool import sweep
from .spec import SweepSpec
from .summary import SweepSummary, TrialResult

__all__ = ["Param", "Trial", "parse_param", "plan_trials", "sweep", "SweepSpec", "SweepSummary", "TrialResult"]
