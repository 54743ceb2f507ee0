"""A state row whose JSON document is damaged (a hand edit, a broken client, a bad restore): one line
naming the row, never "internal error: JSONDecodeError"; commands over many rows set it aside and go
on with the rest; a write that adds to a damaged meta keeps its text instead of failing or dropping it."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.conftest import run_fleet



def _seed(state, lease_id: str, run_id: str, user: str = "tester") -> None:
    """A live local lease whose one machine is already gone, with one running run (detached)."""
    from fleet.models import Lease, Machine, utcnow
    from fleet.paths import subdir
    now = utcnow()
    gone = subdir("machines") / lease_id           # where the local provider keeps it; not there any more
    machine = Machine(id=f"{lease_id}-n0", lease_id=lease_id, node_rank=0, host="127.0.0.1", port=1,
                      user="fleet", key_path="/nonexistent/key", host_key="ssh-ed25519 AAAA",
                      workdir=str(gone), gpu_slots=(0,),
                      provider_ref={"dir": str(gone), "sshd_pid": 0, "simulated_gpus": True})
    state.save_lease(Lease(id=lease_id, provider="local", template="local-1gpu", machines=[machine],
                           created_at=now, deadline=now + timedelta(hours=1), max_deadline=now + timedelta(hours=2),
                           project="p", user=user, meta={"note": "seeded"}))
    state.create_run(run_id, lease_id=lease_id, project="p", user=user, command="python train.py",
                     log_path="/nonexistent", output_dir="/nonexistent", meta={"detached": True})


@pytest.fixture
def state(fleet_home):
    from fleet.state import open_state
    s = open_state()
    _seed(s, "l-good-0001", "r-good-0001")
    _seed(s, "l-bad-00002", "r-bad-00002")
    yield s
    s.close()


def _errors(proc) -> list[str]:
    assert "internal error" not in proc.stderr and "JSONDecodeError" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("fleet: error:")]


def test_damaged_documents_are_named_not_decoder_errors():
    from fleet.state.documents import CorruptRecord, object_to_extend, stored_object
    assert stored_object(None, "x") == {} and stored_object('{"a": 1}', "x") == {"a": 1}
    for text, why in (("{bad", "is not valid JSON"), ("[1, 2]", "is not a JSON object")):
        with pytest.raises(CorruptRecord) as err:
            stored_object(text, "run r-1's meta")
        assert f"state: run r-1's meta {why}" in err.value.one_line()
        assert object_to_extend(text, "run r-1's meta") == {"unreadable_meta": text}


def test_down_all_releases_the_readable_leases_and_names_the_damaged_one(state, tmp_path):
    state.db.execute("UPDATE leases SET meta = '{oops' WHERE id = 'l-bad-00002'")
    proc = run_fleet(["down", "--all"], cwd=tmp_path)
    assert proc.returncode != 0, proc.stderr
    assert "lease l-bad-00002 set aside: state: lease l-bad-00002's meta is not valid JSON" in proc.stderr
    errors = _errors(proc)
    assert len(errors) == 1 and "l-bad-00002" in errors[0], proc.stderr
    assert state.lease_status("l-good-0001")[0] == "released", proc.stderr
    assert state.lease_status("l-bad-00002")[0] == "active"      # nothing guessed about a row it cannot read


def test_one_damaged_run_does_not_stop_reap_or_status(state, tmp_path):
    state.db.execute("UPDATE runs SET meta = '{\"detached\": tru' WHERE id = 'r-bad-00002'")
    proc = run_fleet(["reap", "--dry-run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "lease l-bad-00002 left alone: state: run r-bad-00002's meta is not valid JSON" in out, out
    assert not _errors(proc)
    listing = run_fleet(["status", "--json"], cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    ids = {lease["id"] for lease in json.loads(listing.stdout)["leases"]}
    assert ids == {"l-good-0001", "l-bad-00002"}


def test_a_damaged_machine_record_is_one_line_naming_it(state, tmp_path):
    state.db.execute("UPDATE machines SET data = 'not json' WHERE id = 'l-bad-00002-n0'")
    proc = run_fleet(["down", "l-bad-00002"], cwd=tmp_path)
    errors = _errors(proc)
    assert proc.returncode == 5 and len(errors) == 1, (proc.returncode, proc.stderr)
    assert "state: " in errors[0] and "record is not valid JSON" in errors[0], errors[0]
    # `fleet status` lists that lease as damaged and every other one as it is (it failed whole)
    proc = run_fleet(["status", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    health = {v["id"]: v["health"] for v in json.loads(proc.stdout)["leases"]}
    assert health["l-bad-00002"] == "damaged" and health["l-good-0001"] != "damaged", health
    # `down --all` sets that lease aside and releases the rest (it released nothing at all)
    proc = run_fleet(["down", "--all"], cwd=tmp_path)
    errors = _errors(proc)
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert "lease l-bad-00002 set aside: state: machine l-bad-00002-n0's record is not valid JSON" in proc.stderr
    assert state.lease_status("l-good-0001")[0] == "released", proc.stderr
    assert state.lease_status("l-bad-00002")[0] == "active"


def test_ending_a_run_whose_meta_is_damaged_keeps_the_text(state):
    state.db.execute("UPDATE runs SET meta = '{half' WHERE id = 'r-bad-00002'")
    state.finish_run("r-bad-00002", "succeeded", 0, {"cost_usd": 1.5})
    run = state.get_run("r-bad-00002")
    assert run["status"] == "succeeded"
    assert run["meta"] == {"unreadable_meta": "{half", "cost_usd": 1.5}



@pytest.mark.parametrize("column", ["deadline", "created_at", "keep_until"])
def test_a_lease_whose_time_is_not_a_time_is_shown_damaged_and_down_all_releases_the_rest(state, tmp_path, column):
    state.db.execute(f"UPDATE leases SET {column} = 'garbage' WHERE id = 'l-bad-00002'")
    for argv in (["status", "--json"], ["status", "--fast", "--json"]):
        listing = run_fleet(argv, cwd=tmp_path)
        assert listing.returncode == 0 and not _errors(listing), listing.stderr
        views = {lease["id"]: lease for lease in json.loads(listing.stdout)["leases"]}
        assert views["l-bad-00002"]["health"] == "damaged" and views["l-bad-00002"][column] is None, views
        assert views["l-good-0001"]["health"] != "damaged"
    table = run_fleet(["status"], cwd=tmp_path)           # the table too: it was an internal error
    assert table.returncode == 0 and not _errors(table), table.stderr
    assert "l-bad-00002" in table.stdout and "l-good-0001" in table.stdout
    for argv in (["extend", "l-bad-00002", "10m"], ["ssh", "l-bad-00002", "--print"]):
        one = run_fleet(argv, cwd=tmp_path)
        assert one.returncode != 0 and len(_errors(one)) == 1, one.stderr
        assert f"lease l-bad-00002's {column} is not a time: 'garbage'" in one.stderr, one.stderr
    proc = run_fleet(["down", "--all"], cwd=tmp_path)
    assert proc.returncode != 0 and len(_errors(proc)) == 1, proc.stderr
    assert f"lease l-bad-00002 set aside: state: lease l-bad-00002's {column} is not a time" in proc.stderr
    assert state.lease_status("l-good-0001")[0] == "released", proc.stderr
    assert state.lease_status("l-bad-00002")[0] == "active"


def test_ssh_to_a_released_lease_is_refused_not_printed(state, tmp_path):
    assert run_fleet(["down", "l-good-0001"], cwd=tmp_path).returncode == 0
    proc = run_fleet(["ssh", "l-good-0001", "--print"], cwd=tmp_path)
    assert proc.returncode != 0 and proc.stdout == "", proc.stdout
    assert _errors(proc) == ["fleet: error: lease l-good-0001 is released, not active"], proc.stderr
