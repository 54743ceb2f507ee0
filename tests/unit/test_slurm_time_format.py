"""sacct prints its time stamps as SLURM_TIME_FORMAT says (`man sacct`: "standard", the default,
is ISO 8601; "relative" prints `Ystday 06:02`, `Tue 06:02` or `06:02:22`; anything else is a
strftime format), and many users export it in their shell's rc file on the login node. fleet reads
sacct's Start and End as ISO times, so sacct must run with the standard format whatever the
user's environment holds, or a lease whose job ended is billed to now instead of to its end and
its GPU-hours cannot be counted. Here with a fake sacct on PATH that honours the variable."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from fleet.providers.slurm.accounting import ended_at, lease_accounting
from fleet.providers.slurm.commands import LocalRunner, SlurmCommands

FAKE_SACCT = r"""#!/bin/sh
case "${SLURM_TIME_FORMAT:-standard}" in
  standard) start=2026-12-02T06:01:19 end=2026-12-02T06:02:22 ;;
  relative) start="Ystday 06:01" end="Ystday 06:02" ;;
  *) start="Wed 02 Dec 06:01" end="Wed 02 Dec 06:02" ;;
esac
echo "4|TIMEOUT|None|0:0|63|billing=1,cpu=1,gres/gpu=1,node=1|n1|00:01:00|$start|$end|gpu|fleet|normal|fleet-timeout|fleet:lease=LT"
"""


@pytest.fixture
def sacct(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(FAKE_SACCT)
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return SlurmCommands(LocalRunner())


@pytest.mark.parametrize("time_format", ["relative", "%a %d %b %H:%M"])
def test_a_users_slurm_time_format_does_not_break_accounting(sacct, monkeypatch, time_format):
    monkeypatch.setenv("SLURM_TIME_FORMAT", time_format)
    assert ended_at(sacct, ["4"]) == datetime(2026, 12, 2, 6, 2, 22, tzinfo=timezone.utc)
    billed = lease_accounting(sacct, ["4"], Decimal("3.6"))
    assert billed["gpu_seconds"] == 63 and billed["cost_usd"] == Decimal("0.063")
