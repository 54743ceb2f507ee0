"""`fleet config schema -o /tmp/fleet.schema.json` in a directory others can write (/tmp): the
temporary file it writes before renaming was named by the pid alone, so another user could plant
a symlink by that name and have the schema written through it, over a file of the caller's (here
its ~/.bashrc stand-in). It is now made with O_EXCL under an unpredictable name, like `fleet init`'s."""
from __future__ import annotations

import json
import os
from pathlib import Path

from fleet.config.json_schema import write_schema


def test_a_planted_symlink_at_the_temporary_name_is_not_followed(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    mine = tmp_path / "bashrc"
    mine.write_text("export PATH=$HOME/bin:$PATH\n")
    target = shared / "fleet.schema.json"
    (shared / f".{target.name}.{os.getpid()}.tmp").symlink_to(mine)     # what another user plants
    written = write_schema(target)
    assert mine.read_text() == "export PATH=$HOME/bin:$PATH\n"
    assert not Path(written).is_symlink() and json.loads(Path(written).read_text())["title"] == "fleet.toml"
