#!/usr/bin/env bash
# A venv at /opt/fleet/venv with the recipe's Python, pip and pip packages (all pinned in recipe.toml:
# an unpinned `pip install --upgrade pip` would make the image depend on the day of the bake).
source "$(dirname "$0")/lib.sh"
require_version python.version "$FLEET_PYTHON_VERSION"
[ -z "${FLEET_PIP_VERSION:-}" ] || require_version python.pip "$FLEET_PIP_VERSION"
py="python${FLEET_PYTHON_VERSION}"
if [ "$FLEET_BAKE_MODE" = check ]; then
  # The sandbox builder may have another minor version; checking needs *a* python3 there.
  require_cmd python3
  for pkg in $FLEET_PIP_PACKAGES; do
    python3 - "$pkg" <<'PY' || { echo "bad pip requirement: $pkg" >&2; exit 2; }
import re, sys
sys.exit(0 if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?([=<>!~]=?[A-Za-z0-9.*+!-]+)?", sys.argv[1]) else 1)
PY
  done
fi
as_root mkdir -p /opt/fleet
as_root "$py" -m venv /opt/fleet/venv
[ -z "${FLEET_PIP_VERSION:-}" ] || as_root /opt/fleet/venv/bin/pip install -q "pip==${FLEET_PIP_VERSION}"
# shellcheck disable=SC2086
[ -z "$FLEET_PIP_PACKAGES" ] || as_root /opt/fleet/venv/bin/pip install -q $FLEET_PIP_PACKAGES
