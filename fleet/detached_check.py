"""Is there a detached run whose supervisor died? Asked by every `fleet` command before it starts
(fleet/cli/main.py), `fleet status` included, so this module imports nothing but `os` and `json`
and reads only /proc and $FLEET_HOME/supervisors (fleet/run/supervisor.py writes identity.json
there; fleet/run/detach.py `reconcile` acts on the answer)."""
import json
import os

SUPERVISORS = "supervisors"
IDENTITY = "identity.json"


def needs_reconcile() -> bool:
    """A supervisor identity whose process is provably gone (same boot and pid namespace, and no
    live, non-zombie process with that pid and start time)."""
    home = os.environ.get("FLEET_HOME") or os.path.join(os.path.expanduser("~"), ".fleet")
    root = os.path.join(home, SUPERVISORS)
    try:
        names = os.listdir(root)
    except OSError:
        return False
    for name in names:
        try:
            with open(os.path.join(root, name, IDENTITY)) as fh:
                ident = json.load(fh)
            with open("/proc/sys/kernel/random/boot_id") as fh:
                if fh.read().strip() != ident.get("boot_id"):
                    continue   # another boot, or another computer sharing FLEET_HOME: not provable here
            if os.readlink("/proc/self/ns/pid") != ident.get("pid_ns"):
                continue
        except Exception:  # noqa: BLE001 — a damaged identity (any JSON, any nesting) proves nothing here
            continue
        try:
            with open(f"/proc/{int(ident['pid'])}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[-1].split()
            alive = len(fields) > 19 and fields[0] not in ("Z", "X") and fields[19] == str(ident.get("start"))
        except Exception:  # noqa: BLE001 — a pid of null, Infinity, a list: not a live supervisor
            alive = False
        if not alive:
            return True
    return False
