"""A detached run's rank logs shipped into a PostgreSQL state (fleet/run/log_segments.py) when a
rank prints a NUL byte (binary output, some progress bars): PostgreSQL text cannot hold NUL, and
the whole batch of that second — every rank's lines — was refused, so `fleet logs -f` on another
computer silently lost them. The NUL is shipped as U+FFFD, as undecodable bytes already are."""
from __future__ import annotations

from fleet.run.log_segments import LogShipper
from fleet.run_logs import follow_logs
from fleet.state import open_state


def test_a_nul_byte_in_one_rank_loses_no_line_of_any_rank(postgres_url):
    state = open_state(postgres_url)
    try:
        state.create_run("r-nul-1", lease_id=None, project="p", user="u", command="train",
                         log_path="/nonexistent/on/this/computer", output_dir="/nonexistent", meta={"detached": True})
        warnings = []
        shipper = LogShipper(state, "r-nul-1", flush_s=3600, warn=warnings.append)   # flushed by close() only
        sink = shipper.sink(lambda label, stream, line: None)
        sink("0", "out", "epoch 1\x00done")
        sink("1", "out", "rank 1 is fine")
        shipper.close()
        state.finish_run("r-nul-1", "succeeded", 0)
        lines = list(follow_logs("r-nul-1", state=state))
        assert "[1] rank 1 is fine" in lines and "[0] epoch 1\ufffddone" in lines, (lines, warnings)
        assert warnings == []
    finally:
        state.close()
