"""docs/ci.md's GitLab job, as a user copies it: its after_script runs `fleet down --all`, which
releases every lease of FLEET_HOME. With the default ~/.fleet, shared by the concurrent jobs a
shell executor runs as one user, one job's after_script destroyed another job's machines mid-run."""
from __future__ import annotations

import re

import yaml

from tests.conftest import REPO


def _gitlab_job() -> dict:
    text = (REPO / "docs" / "ci.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    jobs = [yaml.safe_load(b) for b in blocks if "after_script" in b]
    assert len(jobs) == 1, "one GitLab job in docs/ci.md"
    return next(iter(jobs[0].values()))


def test_the_documented_job_releases_only_its_own_leases():
    job = _gitlab_job()
    assert any("fleet down --all" in line for line in job["after_script"])
    home = job["variables"].get("FLEET_HOME", "")
    # a directory of this job's own: concurrent jobs never get the same $CI_PROJECT_DIR (or job id)
    assert "$CI_PROJECT_DIR" in home or "$CI_JOB_ID" in home, home
