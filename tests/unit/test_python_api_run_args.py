"""`fleet.up`'s objects of the wrong kind are a UsageError naming the argument, before anything is
granted or leased: `fleet.up("fleet.toml")` was `AttributeError: 'str' object has no attribute
'command'`, `observers=Obs()` a TypeError, `options={...}` an AttributeError (red-team finding)."""
from __future__ import annotations

from pathlib import Path

import pytest

import fleet
from fleet.config.model import Config
from fleet.errors import UsageError


class _Observer:
    def on_finish(self, ctx, summary):
        pass


@pytest.mark.parametrize("call, named", [
    (lambda cfg: fleet.up("fleet.toml"), "config must be a fleet Config"),
    (lambda cfg: fleet.up({"command": "true"}), "config must be a fleet Config"),
    (lambda cfg: fleet.up(cfg, observers=_Observer()), "observers must be a list of RunObserver"),
    (lambda cfg: fleet.up(cfg, options={"ci": True}), "options must be a fleet RunOptions"),
])
def test_wrong_objects_are_named(tmp_path, fleet_home, call, named):
    cfg = Config(path=None, base_dir=Path(tmp_path), project="p", name="p", command="true", provider="fake")
    with pytest.raises(UsageError, match=named):
        call(cfg)
