"""A name that ends in a line break is no name: `$` matches before a final newline, so a project
"p1\\n" passed the check and became a budget scope of its own that every report shows as `p1` (a
teammate could spend outside the team's monthly budget under it; red-team finding)."""
from __future__ import annotations

import pytest

from fleet.config.loader import load_config
from fleet.errors import UsageError


@pytest.mark.parametrize("field, value", [("project", "p1\\n"), ("name", "exp\\n")])
def test_a_name_ending_in_a_newline_is_refused(tmp_path, field, value):
    (tmp_path / "fleet.toml").write_text(f'{field} = "{value}"\ncommand = "true"\n')
    with pytest.raises(UsageError, match=field):
        load_config(cwd=tmp_path)


def test_other_names_checked_by_pattern_refuse_a_final_newline():
    from fleet.snapshots.store import check_new_name
    from fleet.sweep.params import params_from_table
    for call in (lambda: check_new_name("train-v3\n"), lambda: params_from_table({"lr\n": [0.1, 0.2]})):
        with pytest.raises(UsageError):
            call()
