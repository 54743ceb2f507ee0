"""A new provider touches one package: a throwaway one, installed only as a package with two entry
points (the provider and its contract harness), shows up in `fleet init`'s starter, in the JSON
Schema editors are pointed at, in config validation, and in the contract suite, with no file of
fleet's edited."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleet.providers import registry

REPO = Path(__file__).resolve().parents[2]

PACKAGE = '''
from dataclasses import dataclass
from typing import ClassVar

from fleet.config.schema import STRING, Key
from fleet.providers.contract import ContractHarness
from fleet.providers.fake import FakeProvider, FakeSettings


@dataclass
class ThrowawaySettings(FakeSettings):
    zone: str = "z1"
    section: ClassVar[str] = "throwaway"
    help: ClassVar[str] = "Throwaway machines (a provider made up by a test)."
    keys: ClassVar[dict] = {**FakeSettings.keys, "zone": Key(STRING, "Where the throwaway machines are.")}


class ThrowawayProvider(FakeProvider):
    name = "throwaway"
    listed = True
    description = "throwaway machines made up by a test"
    settings = ThrowawaySettings


class Clock:
    now = 1_700_000_000.0

    def __call__(self):
        return self.now


class ThrowawayHarness(ContractHarness):
    template = "fake-1gpu"

    def __init__(self, request):
        super().__init__(request)
        self.root = request.getfixturevalue("tmp_path") / "throwaway"
        self.clock = Clock()

    def make(self):
        return ThrowawayProvider(root=self.root, clock=self.clock)

    def wait_ended(self, provider, lease):
        self.clock.now += 3600          # only time passes: the simulated watchdog ends the machines
        return all(s.state == "gone" for s in provider.describe(lease))

    def state_dir(self, machine):
        return None
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    """The package, importable and registered exactly as `pip install` would leave it."""
    root = tmp_path / "site"
    (root / "throwaway_gpus").mkdir(parents=True)
    (root / "throwaway_gpus" / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    info = root / "throwaway_gpus-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-gpus\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fleet.providers]\nthrowaway = throwaway_gpus:ThrowawayProvider\n\n"
                                           "[fleet.contract_harnesses]\nthrowaway = throwaway_gpus:ThrowawayHarness\n")
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    monkeypatch.syspath_prepend(str(root))
    registry.refresh()
    yield root
    registry.refresh()
    for name in [m for m in sys.modules if m.startswith("throwaway_gpus")]:
        del sys.modules[name]


def fleet_env(site: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "FLEET_HOME": str(tmp_path / "home")}


def test_fleet_init_and_the_schema_offer_it(site, tmp_path):
    exp = tmp_path / "exp"
    done = subprocess.run([sys.executable, "-m", "fleet.cli.main", "init", str(exp)], env=fleet_env(site, tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = (exp / "fleet.toml").read_text()
    assert '#   "throwaway": throwaway machines made up by a test' in text
    assert "# [throwaway]" in text and "# zone = …   # Where the throwaway machines are." in text
    # The first line names the schema by its stable $id; `fleet config schema`, the local copy editors
    # are pointed at, knows the new provider and its section, and the shipped file is never rewritten.
    from fleet.config.json_schema import SCHEMA_ID
    from fleet.config.loader import SCHEMA_FILE
    assert text.splitlines()[0] == f"#:schema {SCHEMA_ID}"
    shipped = SCHEMA_FILE.read_text()
    printed = subprocess.run([sys.executable, "-m", "fleet.cli.main", "config", "schema"],
                             env=fleet_env(site, tmp_path), capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    schema = json.loads(printed.stdout)
    assert schema["$id"] == SCHEMA_ID and "throwaway" in schema["properties"]["provider"]["enum"]
    assert set(schema["properties"]["throwaway"]["properties"]) == {"price_per_hour", "fail_after", "zone"}
    assert SCHEMA_FILE.read_text() == shipped and "throwaway" not in shipped
    # The starter loads, and so does the new section once uncommented.
    from fleet.config.loader import load_config
    assert load_config(cwd=exp).provider == "local"
    (exp / "fleet.toml").write_text(text.replace('provider = "local"', 'provider = "throwaway"')
                                    .replace("# [throwaway]", "[throwaway]").replace("# zone = …", 'zone = "eu"'))
    config = load_config(cwd=exp)
    assert config.provider == "throwaway" and registry.create(config).config.zone == "eu"


def test_the_contract_suite_runs_against_it(site, tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/contract/test_provider_contract.py", "-k", "throwaway or covered"],
                          cwd=REPO, env=fleet_env(site, tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 6 and "failed" not in summary, summary      # every check, plus "every provider is covered"
