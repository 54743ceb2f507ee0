#!/usr/bin/env bash
# The test suite with every core kept busy by a CPU hog: fleet's guarantees (release, deadlines,
# budgets) must not rest on a quiet machine. Same set-up and arguments as scripts/test.sh.
#   scripts/test_loaded.sh                 the whole suite, one hog per core
#   HOGS=4 scripts/test_loaded.sh tests/e2e -k ctrl_c
set -euo pipefail
cd "$(dirname "$0")/.."
hogs=${HOGS:-$(nproc)}
pids=()
stop_hogs() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap stop_hogs EXIT INT TERM
for _ in $(seq "$hogs"); do
  # Plain busy loops at normal priority, as another user's training or compile job would be.
  python3 -c 'while True: pass' &
  pids+=($!)
done
echo "test_loaded: $hogs CPU hog(s) running (pids ${pids[*]})" >&2
set +e
scripts/test.sh "$@"
rc=$?
set -e
exit $rc
