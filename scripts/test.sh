#!/usr/bin/env bash
# One command on a fresh machine: set everything up (OS packages, .venv, test extras), then run
# every test: unit, integration (real sshd, moto server, PostgreSQL), e2e (the CLI) and faults.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
export PYTHONDONTWRITEBYTECODE=1
lint=0
if [ -x scripts/lint_workflows.sh ]; then
  scripts/lint_workflows.sh || lint=$?
fi
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
[ "$rc" = 0 ] && [ "$lint" != 0 ] && rc=$lint
exit $rc
