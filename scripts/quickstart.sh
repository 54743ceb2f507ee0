#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run the example experiment on 8 local
# machines (`fleet up --gpus 8` in examples/digits). Extra arguments go to `fleet up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd examples/digits
exec ../../.venv/bin/fleet up --gpus 8 "$@"
