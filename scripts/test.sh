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
# Three workers on 2 cores: most tests wait on sshd, moto, PostgreSQL or Slurm rather than compute
# (a whole run keeps ~0.7 of a core busy), and a third worker cut a run from 14 min to 11.7 here;
# tests needing the Slurm cluster share one worker (tests/conftest.py).
# FLEET_TEST_WORKERS=0 runs everything in this process (e.g. to debug with -s or --pdb).
workers=${FLEET_TEST_WORKERS:-3}
parallel=()
[ "$workers" != 0 ] && parallel=(-n "$workers" --dist loadgroup)
.venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" "$@"
rc=$?
set -e
[ "$rc" = 0 ] && [ "$lint" != 0 ] && rc=$lint
exit $rc
