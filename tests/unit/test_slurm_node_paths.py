"""[slurm] workdir and shared_dir land, quoted, in every node's sshd_config: a double quote, a
backslash or a control character in them cannot be quoted there (sshd refused to start on every node,
and the lease failed only after the allocation). They are refused when the config loads; a `%` or a
space is kept (the node doubles `%` where sshd expands tokens: tests/integration/test_slurm_provider.py)."""
from __future__ import annotations

import pytest

from fleet.errors import ConfigError
from fleet.providers.slurm.settings import SlurmSettings


@pytest.mark.parametrize("key", ["workdir", "shared_dir"])
@pytest.mark.parametrize("value", ['/scratch/a"b', "/scratch/a\\b", "/scratch/a\nb", "/scratch/a\x7fb", "scratch"])
def test_a_node_path_sshd_could_not_read_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key}: must be an absolute path"):
        SlurmSettings.parse({key: value})


def test_spaces_percents_and_apostrophes_are_kept():
    s = SlurmSettings.parse({"workdir": "/scratch/team's 100% dir", "shared_dir": "/shared/a b"})
    assert (s.workdir, s.shared_dir) == ("/scratch/team's 100% dir", "/shared/a b")
