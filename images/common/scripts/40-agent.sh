#!/usr/bin/env bash
# The fleet agent (watchdog + telemetry, stdlib only) at /opt/fleet/agent.py. The bake uploads the
# agent from the controller's fleet checkout and passes its path in FLEET_AGENT_SRC. Launch-template
# user-data starts it at boot, so even a machine launched by hand ends itself at its deadline.
source "$(dirname "$0")/lib.sh"
[ -f "${FLEET_AGENT_SRC:-}" ] || { echo "FLEET_AGENT_SRC does not point at the uploaded agent" >&2; exit 2; }
require_cmd python3
python3 - "$FLEET_AGENT_SRC" <<'PY'
import ast, sys
ast.parse(open(sys.argv[1]).read(), sys.argv[1])
PY
as_root mkdir -p /opt/fleet /var/lib/fleet
as_root install -m 0755 "$FLEET_AGENT_SRC" /opt/fleet/agent.py
write_root_file /opt/fleet/IMAGE 0644 <<INFO
recipe=$FLEET_RECIPE
recipe_hash=$FLEET_RECIPE_HASH
INFO
