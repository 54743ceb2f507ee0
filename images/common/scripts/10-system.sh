#!/usr/bin/env bash
# System packages from the recipe's [packages] apt list.
source "$(dirname "$0")/lib.sh"
require_cmd apt-get
[ -n "$FLEET_APT_PACKAGES" ] || { say "no apt packages"; exit 0; }
for pkg in $FLEET_APT_PACKAGES; do
  [[ "$pkg" =~ ^[a-z0-9][a-z0-9.+-]*(=[A-Za-z0-9.:~+-]+)?$ ]] || { echo "bad apt package name: $pkg" >&2; exit 2; }
done
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -q
# shellcheck disable=SC2086  # the list is word-split on purpose
as_root apt-get install -y -q --no-install-recommends $FLEET_APT_PACKAGES
