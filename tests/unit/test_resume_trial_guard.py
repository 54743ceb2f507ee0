"""`fleet up --resume` of a sweep trial needs the trial's own command and parameters
(fleet/run/checkpoints.py): also through an attempt that resumed the trial, and for a parameter whose
value is stored masked as a secret (FLEET_PARAM_TOKENIZER holds TOKEN)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fleet.errors import UsageError
from fleet.masking import Masker
from fleet.run.resume_attempt import _refuse_trial_without_its_inputs
from fleet.state import open_state


def _config(command: str, **env: str):
    return SimpleNamespace(command=command, env=env, secrets=[], user=None)


@pytest.fixture
def state(fleet_home):
    st = open_state()
    params = {"FLEET_PARAM_TOKENIZER": "bert-base-uncased", "FLEET_PARAM_LR": "0.5"}
    mask = Masker.for_config(_config("x", **params))
    st.create_run("r-trial", lease_id=None, project="p", user="u", command="python t.py --tokenizer bert-base-uncased",
                  log_path="l", output_dir="o", meta={"trial": "t001", "params": params}, masker=mask)
    st.create_run("r-again", lease_id=None, project="p", user="u", command="python t.py", log_path="l",
                  output_dir="o", meta={"resumed_from": "r-trial"})
    yield st
    st.close()


def test_a_masked_parameter_given_again_resumes(state):
    stored = state.get_run("r-trial")
    assert "bert-base-uncased" not in stored["command"]            # the row holds it masked
    _refuse_trial_without_its_inputs(state, "r-trial", _config(
        "python t.py --tokenizer bert-base-uncased", FLEET_PARAM_TOKENIZER="bert-base-uncased", FLEET_PARAM_LR="0.5"))


def test_an_attempt_that_resumed_a_trial_needs_the_trials_inputs_too(state):
    with pytest.raises(UsageError, match="run r-again continues sweep trial t001 \\(r-trial\\)"):
        _refuse_trial_without_its_inputs(state, "r-again", _config("python t.py"))
    with pytest.raises(UsageError, match="sweep trial t001"):
        _refuse_trial_without_its_inputs(state, "r-trial", _config("python t.py --tokenizer bert-base-uncased",
                                                                    FLEET_PARAM_LR="0.5"))


def test_an_attempt_whose_earlier_run_is_gone_from_the_state_is_not_refused_for_it(state):
    state.create_run("r-orphan", lease_id=None, project="p", user="u", command="python t.py", log_path="l",
                     output_dir="o", meta={"resumed_from": "r-deleted"})
    _refuse_trial_without_its_inputs(state, "r-orphan", _config("python t.py"))
