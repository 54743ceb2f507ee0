"""`fleet.down([], all_leases=True, user=...)` and `fleet.status(user=...)` from a script in team mode:
a user name that is empty (an unset variable passed on) or not a name is refused in one line; it
used to filter nothing, so `down` released every teammate's live lease."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from tests.unit.test_state_damaged_rows import _seed


@pytest.fixture
def team_state(fleet_home):
    from fleet.state import open_state
    state = open_state()
    _seed(state, "l-mine-0001", "r-mine-0001")
    _seed(state, "l-bobs-0002", "r-bobs-0002", user="bob")
    yield state
    state.close()


@pytest.mark.parametrize("user", ["", "  ", 0])
def test_down_all_for_a_user_that_is_no_name_is_refused_and_releases_nothing(team_state, user):
    import fleet
    with pytest.raises(UsageError) as err:
        fleet.down([], all_leases=True, user=user)
    assert "user must be a non-empty string" in err.value.one_line()
    with pytest.raises(UsageError):
        fleet.status(user=user)
    assert {lease.id for lease in team_state.list_leases(active_only=True)} == {"l-mine-0001", "l-bobs-0002"}


def test_the_store_reads_an_empty_owner_as_a_name_not_as_everyone(team_state):
    assert team_state.list_leases(active_only=True, user="") == []
    assert team_state.status_records(user="") == []
    assert [r["id"] for r in team_state.status_records(user="bob")] == ["l-bobs-0002"]
