"""`fleet queue`'s position is each waiter's place in the line it is actually in: each provider's
waiters queue among themselves (an AWS lease waiting for EC2 capacity never holds up team-host
requests), and a request held back by its own user's GPU limit holds up nobody. The listing
numbered every row in one line, so a team-host request that was next showed as #2 behind an AWS
wait (and behind an over-limit request) that never delays it."""
from __future__ import annotations

from fleet.providers.ssh.queue import WaitQueue
from fleet.state import open_state


def test_positions_follow_who_is_served_next(fleet_home):
    state = open_state()
    try:
        queue = WaitQueue(state.db)
        queue.join(lease_id="L-aws", owner="ann", project="p", gpus=8, machines=1, provider="aws",
                   reason="waiting for capacity: p5.48xlarge in us-east-1 (InsufficientInstanceCapacity)")
        queue.join(lease_id="L-limit", owner="bob", project="p", gpus=4, machines=1, provider="ssh", reason="limit")
        queue.touch("L-limit", "bob holds 4 GPU(s)", over_limit=True)
        queue.join(lease_id="L-ssh", owner="cat", project="p", gpus=2, machines=1, provider="ssh", reason="slots")
        queue.join(lease_id="L-ssh2", owner="dan", project="p", gpus=2, machines=1, provider="ssh", reason="slots")
        shown = {w.lease_id: w.position for w in queue.waiting()}
        for w in queue.waiting():
            if w.lease_id != "L-limit":
                assert shown[w.lease_id] == queue.ahead_of(w.lease_id, w.provider) + 1, (w.lease_id, shown)
        assert shown["L-aws"] == 1 and shown["L-ssh"] == 1 and shown["L-ssh2"] == 2
    finally:
        state.close()
