"""What every bake does after the recipe's steps and verification, whatever the recipe says: fleet's
own cleanup (the builder's host keys, authorized keys, machine id, cloud-init state, the bake's
upload and, last, the passwordless sudo the builder was booted with), then a check that the login
really lost sudo. A recipe is the user's to write; an image that ships `fleet ALL=(ALL)
NOPASSWD:ALL` to every machine must not depend on the recipe remembering a cleanup step.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import InfrastructureError
from .builder import BAKE_SUDOERS

SUDO_PROBE = "sudo -n true"

# Run with `bash -s` from stdin: nothing of it lives in (or depends on) the recipe's files, which the
# cleanup removes along with the rest of the upload. check mode prints each command instead.
CLEANUP_SCRIPT = f"""\
set -euo pipefail
mode="${{FLEET_BAKE_MODE:-apply}}"
run() {{
  if [ "$mode" = check ]; then printf 'would run:'; printf ' %q' "$@"; printf '\\n'; else "$@"; fi
}}
as_root() {{ if [ "$(id -u)" = 0 ]; then run "$@"; else run sudo -n "$@"; fi; }}
if [ "$mode" = apply ] && [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
  echo "fleet's cleanup needs the bake's sudo, which a recipe step removed ({BAKE_SUDOERS}):" \
       "leave it to fleet, which removes it last" >&2
  exit 5
fi
as_root find /etc/ssh -maxdepth 1 -name 'ssh_host_*' -delete
as_root truncate -s 0 /etc/machine-id
as_root find /home /root -maxdepth 3 -path '*/.ssh/authorized_keys' -delete
if [ "$mode" = check ] || command -v cloud-init >/dev/null 2>&1; then as_root cloud-init clean --logs; fi
as_root rm -rf "$FLEET_BAKE_DIR" /home/fleet/work/.fleet /var/log/fleet-bootstrap.log
as_root rm -f {BAKE_SUDOERS}
"""


def cleanup(session, remote: str, mode: str, *, sandbox: bool, progress: Callable[[str], None]
            ) -> dict[str, Any]:
    """Run fleet's cleanup on the builder; raise (no image) if it fails. In the sandbox the builder
    is this computer: its cleanup only ever prints what it would do."""
    run_mode = "check" if sandbox else mode
    progress("fleet cleanup: host keys, authorized keys, cloud-init state, the bake's sudo")
    res = session.run(["bash", "-s"], env={"FLEET_BAKE_MODE": run_mode, "FLEET_BAKE_DIR": remote},
                      cwd="/", check=False, timeout=600, stdin=CLEANUP_SCRIPT.encode())
    step = {"step": "fleet cleanup", "script": "(fleet)", "exit_code": res.exit_code,
            "output_tail": (res.stdout + res.stderr).strip().splitlines()[-5:]}
    if res.exit_code != 0:
        last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise InfrastructureError(f"fleet cleanup on the builder exited {res.exit_code}: {last[0][:240]}")
    return step


def refuse_sudo(session, mode: str) -> dict[str, Any]:
    """After the cleanup the login must not have passwordless sudo, or every machine of the image
    would give its experiment root. Refused in apply mode; check mode removed nothing, so there
    the probe is only reported."""
    res = session.run(SUDO_PROBE, check=False, timeout=60)
    if res.exit_code != 0:
        return {"check": "no sudo", "command": SUDO_PROBE, "result": "ok",
                "output": f"refused (exit {res.exit_code})"}
    if mode == "check":
        return {"check": "no sudo", "command": SUDO_PROBE,
                "result": "skipped: check mode removes nothing (this login's sudo is not the bake's)"}
    raise InfrastructureError("the builder's login still has passwordless sudo after fleet's cleanup "
                              f"(`{SUDO_PROBE}` succeeded): refusing to make an image of it")
