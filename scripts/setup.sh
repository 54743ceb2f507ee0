#!/usr/bin/env bash
# Set up fleet on a fresh Debian/Ubuntu machine: OS packages, a virtualenv in .venv, the package.
#   scripts/setup.sh          what `fleet up` needs (OpenSSH server for local machines)
#   scripts/setup.sh --dev    also what the test suite needs (PostgreSQL, Slurm, rsync, Chromium, test extras)
# Idempotent: installed pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v git >/dev/null 2>&1 || need+=(git)
if [ "$dev" = 1 ]; then
  command -v rsync >/dev/null 2>&1 || need+=(rsync)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  # The Slurm test cluster (tests/fixtures/slurm.py, docs/slurm.md); MariaDB backs slurmdbd for sacct.
  for pkg in slurmctld slurmd slurmdbd munge; do [ -x "/usr/sbin/$pkg" ] || need+=("$pkg"); done
  command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian packages start system daemons (sshd, slurm, munge, MariaDB) where allowed; fleet and
  # its tests run their own on loopback and need none of them.
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
else
  .venv/bin/python -m pip install -q -e . numpy
fi
echo "setup: ready ($(.venv/bin/fleet --version 2>/dev/null || echo fleet installed))"
