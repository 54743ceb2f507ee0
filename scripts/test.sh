#!/usr/bin/env bash
# One command on a fresh machine: set everything up (OS packages, .venv, test extras), then run
# every test: unit, integration (real sshd, moto server, PostgreSQL), e2e (the CLI) and faults.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# fleet's own byte code once, as an installed package has it: PYTHONDONTWRITEBYTECODE (next) keeps the
# tests' experiment checkouts clean of __pycache__, but left every fleet process of the suite (CLI
# calls, supervisors, agents) compiling the modules no earlier process had happened to write.
.venv/bin/python -m compileall -q fleet >/dev/null
export PYTHONDONTWRITEBYTECODE=1
lint=0
if [ -x scripts/lint_workflows.sh ]; then
  scripts/lint_workflows.sh || lint=$?
fi
set +e
# Five workers on 2 cores: most tests wait on sshd, moto, PostgreSQL or Slurm rather than compute.
# Whole quiet runs of pytest: 4 workers 977 s; 5 workers 891 s, about 1.3 of the 2 cores busy (15.7
# min user + 3.8 system); 6 workers kept both cores busy from the start and took 1,060 s. Tests
# needing the Slurm cluster share one worker (tests/conftest.py).
# FLEET_TEST_WORKERS=0 runs everything in this process (e.g. to debug with -s or --pdb).
workers=${FLEET_TEST_WORKERS:-5}
parallel=()
[ "$workers" != 0 ] && parallel=(-n "$workers" --dist loadgroup)
.venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" "$@"
rc=$?
set -e
[ "$rc" = 0 ] && [ "$lint" != 0 ] && rc=$lint
exit $rc
