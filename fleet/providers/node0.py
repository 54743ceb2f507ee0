"""The provider's part of handing a detached run to a supervisor on node 0 of its own lease.

fleet/run/node_launch.py does what every provider shares: lease, log in to node 0 as its
supervisor login, copy fleet's package and the lease's key into that login's 0700 directory, hand
the state URL, the store's credentials and the run's [env] over stdin, follow the supervisor to the
handoff. A provider that declares `SupervisesFromNode0` (capabilities.py) returns one of these
for what differs: which key reaches the machines from node 0, which further files and credentials
node 0 needs, and what ends the supervisor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class Node0Handoff:
    # Releasing node 0 ends the supervisor with it (a cloud instance): nothing is left to clean up
    # on node 0 afterwards. False (a team host, which stays up): the supervisor cleans up (`finish`).
    release_ends_supervisor: bool = True
    # Later attempts (recovery) may be leased from node 0: it holds what the provider needs to make
    # machines. False: a lost machine ends the run with its checkpoints (`fleet up --resume`).
    leases_from_node0: bool = True
    why_no_lease_from_node0: str = ""

    # -- on the launching computer -------------------------------------------------------------
    def lease_key(self, lease: Any, node0: Any, events: Any) -> bytes:
        """The private key node 0's supervisor reaches every machine of the lease with (as the
        experiment's login, as a laptop does). Default: the lease's own key (a cloud lease has one).
        Whatever it sets up on the machines must end with the lease's release (the launcher releases
        the lease when the handoff fails)."""
        return Path(node0.key_path).read_bytes()

    def files(self, config: Any, provider: Any, remote: str) -> dict[str, bytes]:
        """Further files for the supervisor's directory on node 0 (mode 0600): path → bytes."""
        return {}

    def env(self, config: Any, remote: str) -> dict[str, str]:
        """Further environment for the supervisor (handed over on stdin, never written to disk)."""
        return {}

    def after_copy(self, session: Any, remote: str) -> None:
        """Anything more to set up in the supervisor's directory, over node 0's SSH session."""

    # -- on node 0, in the supervisor ----------------------------------------------------------
    def finish(self, lease: Any, directory: Path) -> None:
        """After the whole lease was released, when `release_ends_supervisor` is False: remove
        what the supervisor no longer needs (the lease's key above all)."""
