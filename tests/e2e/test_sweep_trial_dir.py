"""What a trial leaves beside its code copy, one level up (`..`), is not the next trial's on the same
warm machine: a trainer's `../results` or `../checkpoints`, or a `../data` it replaced with a
directory of its own (the next trial once read that through `../data`, since `ln -sfn` put the
link inside it, while its record pinned the staged data)."""
from __future__ import annotations

import json

from tests.conftest import processes_under, run_fleet

# Trial 1 writes ../results and swaps ../data (a link to the staged data) for a fake dataset;
# trial 2 succeeds only when neither is there and ../data reads the staged data again.
SCRIPT = ("if [ {x} = 1 ]; then mkdir -p ../results && echo t1 > ../results/last.pt && "
          "rm ../data && mkdir -p ../data/train && echo fake > ../data/train/x.txt; "
          "else test ! -e ../results && test -L ../data && grep -q staged ../data/train/x.txt; fi")


def test_the_next_trial_finds_nothing_the_last_one_left_beside_its_code(experiment, fleet_home):
    (experiment / "data").mkdir()
    (experiment / "data" / "x.txt").write_text("staged\n")
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n[data]\ntrain = "data"\n')
    proc = run_fleet(["sweep", "--param", "x=1,2", "--json", "--", "sh", "-c", SCRIPT], cwd=experiment, timeout=180)
    trials = json.loads(proc.stdout)["trials"]
    assert [t["state"] for t in trials] == ["succeeded", "succeeded"], proc.stderr[-3000:]
    assert trials[0]["machines"] == trials[1]["machines"]          # the same warm machine
    assert proc.returncode == 0
    assert processes_under(fleet_home) == []
