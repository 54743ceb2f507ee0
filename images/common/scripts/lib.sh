# Sourced by every step script. The bake runs steps in one of two modes:
#   FLEET_BAKE_MODE=apply  (real builders): run every command, as root where needed.
#   FLEET_BAKE_MODE=check  (the sandbox builder, a local sshd machine): check the step's inputs and the
#                          tools it needs, and print each command instead of running it, so a recipe's
#                          steps are exercised end to end without installing a driver on a laptop.
set -euo pipefail
FLEET_BAKE_MODE="${FLEET_BAKE_MODE:-apply}"
case "$FLEET_BAKE_MODE" in apply|check) ;; *) echo "FLEET_BAKE_MODE must be apply or check" >&2; exit 2;; esac

say() { echo "[$FLEET_RECIPE] $*"; }

run() {
  if [ "$FLEET_BAKE_MODE" = check ]; then printf 'would run:'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then run "$@"; else run sudo -n "$@"; fi
}

require_version() {   # require_version NAME VALUE
  [[ "$2" =~ ^[0-9]+(\.[0-9]+)*$ ]] || { echo "$1: '$2' is not a version like 12.4.1" >&2; exit 2; }
}

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || { echo "this builder has no '$1' (needed by this step)" >&2; exit 3; }
}

write_root_file() {   # write_root_file PATH MODE  (content on stdin)
  local content; content="$(cat)"
  if [ "$FLEET_BAKE_MODE" = check ]; then say "would write $1 (mode $2, ${#content} bytes)"; return; fi
  printf '%s\n' "$content" | as_root tee "$1" >/dev/null
  as_root chmod "$2" "$1"
}
