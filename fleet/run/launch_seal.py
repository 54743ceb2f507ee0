"""A detached run's launch settings, sealed by the user who launched it, so that `fleet reap` resumes
only runs that user launched.

`fleet reap` starts a lost run's next attempt from what the run recorded in the shared state: its
lease's `relaunch` settings and its pinned inputs (where its fleet.toml is, in which store), which
decide where the new supervisor goes and so which host receives the state URL and the caller's
credentials on its stdin. Anyone who can write the shared state could record such a run under
another user's name. The launcher therefore seals what decides the next attempt (the run's id, the
provider, the relaunch settings, the pins) with an HMAC-SHA256 key only its user holds, and the
reaper resumes a run only when the seal matches under its own key; any other run is ended lost,
not resumed, and the reaper says how its owner resumes it by hand.

The key: FLEET_LAUNCH_SEAL_KEY (64 hex digits; give a team's scheduled reaper the same value as the
computers that launch) or, by default, `$FLEET_HOME/keys/launch-seal.key`, made on first use (32
random bytes, 0600). It never leaves this computer: the remote supervisor's environment excludes it.
A key file that is a link, someone else's, or open to others (or in a directory others may write)
is refused rather than used.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from ..errors import UsageError

KEY_ENV = "FLEET_LAUNCH_SEAL_KEY"
SEAL_FIELD = "seal"
_KEY_BYTES = 32


def _key() -> bytes:
    raw = os.environ.get(KEY_ENV, "").strip()
    if raw:
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            key = b""
        if len(key) < 16:
            raise UsageError(f"{KEY_ENV} must be at least 32 hex digits (e.g. `openssl rand -hex 32`)")
        return key
    from ..paths import subdir
    path = subdir("keys") / "launch-seal.key"
    _check_private(path.parent, dir_=True)
    key = _read_private(path)
    if key is not None and len(key) == _KEY_BYTES:
        return key
    new = os.urandom(_KEY_BYTES)
    tmp = path.with_name(f".launch-seal.{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, new)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)          # two first uses at once: one key wins, both read it
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    key = _read_private(path) or b""
    if len(key) != _KEY_BYTES:      # cut short by hand: never seal with a guessable key
        raise UsageError(f"{path} is not a launch seal key ({len(key)} bytes, not {_KEY_BYTES})",
                         hint="remove it; runs sealed with it are then resumed by hand")
    return key


def _read_private(path) -> bytes | None:
    """The key file's bytes (None when there is none), only from a regular file of this user's that
    no one else may read or write, never through a link: whoever could read it forges seals, and
    whoever could point it at a file of theirs has their own planted runs resumed with our credentials."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)   # NONBLOCK: a FIFO planted there
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path} cannot be read as the launch seal key: {exc.strerror or exc}"
                         + (" (a symbolic link)" if os.path.islink(path) else ""),
                         hint=f"remove it (a new key is made), or set {KEY_ENV}") from None
    try:
        _check_private(path, st=os.fstat(fd))
        return os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)


def _check_private(path, *, st=None, dir_: bool = False) -> None:
    import stat
    st = st or os.stat(path)
    wrong = (not (stat.S_ISDIR if dir_ else stat.S_ISREG)(st.st_mode) or st.st_uid != os.geteuid()
             or stat.S_IMODE(st.st_mode) & (0o022 if dir_ else 0o077))
    if wrong:
        what = "directory" if dir_ else "file"
        raise UsageError(f"{path} is not a private {what} of this user (owner uid {st.st_uid}, mode "
                         f"{stat.S_IMODE(st.st_mode):04o}): not used for the launch seal key",
                         hint=f"chown it to yourself and `chmod {'700' if dir_ else '600'} {path}`, or remove it")


def _message(run_id: str, provider: str, relaunch: dict[str, Any], pins: dict[str, Any]) -> bytes:
    settings = {k: v for k, v in relaunch.items() if k != SEAL_FIELD}
    return json.dumps({"run": run_id, "provider": provider, "relaunch": settings, "pins": pins},
                      sort_keys=True, separators=(",", ":"), default=str).encode()


def seal(run_id: str, provider: str, relaunch: dict[str, Any], pins: dict[str, Any]) -> str:
    """The seal of a run's launch (`run_id`: its first attempt's id; `pins`: as the run row records
    them, fleet/run/lease.py `pins_meta`)."""
    return hmac.new(_key(), _message(run_id, provider, relaunch, pins), hashlib.sha256).hexdigest()


def command_digest(command: str) -> str:
    """What the sealed settings keep of a command given on the command line (its text is the run row's)."""
    return hashlib.sha256(command.encode()).hexdigest()


def why_unsealed(run_id: str, provider: str, relaunch: dict[str, Any], pins: dict[str, Any],
                 command: str = "") -> str | None:
    """None when `relaunch` carries this user's seal over exactly these settings and, where they say
    the command came from the command line, `command` (the run row's text) is the one sealed; else
    why not."""
    found = relaunch.get(SEAL_FIELD) if isinstance(relaunch, dict) else None
    if not isinstance(found, str) or not found:
        return "its launch settings carry no seal (recorded by an older fleet, or not by fleet)"
    if not hmac.compare_digest(found, seal(run_id, provider, relaunch, pins)):
        return ("its launch settings are not sealed by this computer's key (launched from another computer "
                f"without the same {KEY_ENV}, or changed since)")
    if relaunch.get("command") and relaunch.get("command_sha256") != command_digest(command):
        return ("its recorded command is not the one it was launched with (changed since, or masked because "
                "it held a secret)")
    return None


__all__ = ["KEY_ENV", "SEAL_FIELD", "command_digest", "seal", "why_unsealed"]
