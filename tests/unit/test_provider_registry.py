"""Providers are found through the registry (entry points), never by name in fleet's own code."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleet.config.loader import load_config
from fleet.errors import ConfigError
from fleet.providers import registry

REPO = Path(__file__).resolve().parents[2]
FLEET = str(Path(sys.executable).with_name("fleet"))   # the venv's entry point


def test_the_fake_provider_is_one_module_plus_one_entry():
    """The whole cost of adding a provider: its module, and its line in pyproject.toml."""
    knows = []
    for path in sorted((REPO / "fleet").rglob("*")):
        if path.suffix in (".py", ".json", ".toml") and re.search(r"providers\.fake|FakeProvider|[\"']fake[\"']",
                                                                   path.read_text(errors="replace")):
            knows.append(path.relative_to(REPO).as_posix())
    assert knows == ["fleet/providers/fake.py"]
    entries = (REPO / "pyproject.toml").read_text()
    assert 'fake = "fleet.providers.fake:FakeProvider"' in entries
    from fleet.providers.fake import FakeProvider
    assert registry.provider_class("fake") is FakeProvider


def test_fake_is_usable_from_fleet_toml_with_its_own_section(tmp_path):
    (tmp_path / "fleet.toml").write_text('command = "x"\nprovider = "fake"\ntemplate = "fake-4gpu"\n\n'
                                         '[fake]\nprice_per_hour = "2.50"\n')
    config = load_config(cwd=tmp_path)
    provider = registry.create(config)
    assert provider.name == "fake" and str(provider.templates()["fake-4gpu"].price_per_hour) == "2.50"
    (tmp_path / "fleet.toml").write_text('command = "x"\nprovider = "fake"\n\n[fake]\nprice_per_hr = 1\n')
    with pytest.raises(ConfigError) as err:
        load_config(cwd=tmp_path)
    assert err.value.one_line().startswith("fleet.toml:5: fake.price_per_hr: unknown key (did you mean "
                                           "'price_per_hour'?)")


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """An installed third-party package declaring a provider by entry point, as pip would leave it."""
    site = tmp_path / "site"
    (site / "demo_gpus").mkdir(parents=True)
    (site / "demo_gpus" / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from typing import ClassVar
        from fleet.config.schema import STRING, Key
        from fleet.models import Template
        from fleet.providers.base import BaseProvider, ProviderSettings

        @dataclass
        class DemoSettings(ProviderSettings):
            zone: str = "z1"
            section: ClassVar[str] = "demo"
            keys: ClassVar[dict] = {"zone": Key(STRING, "Where the demo machines are.")}

        class DemoProvider(BaseProvider):
            name = "demo"
            settings = DemoSettings

            def __init__(self, zone="z1"):
                self.zone = zone

            @classmethod
            def from_config(cls, config):
                return cls(cls.settings_from(config).zone)

            def templates(self):
                return {"demo-2gpu": Template("demo-2gpu", "demo", 2)}

            def lease(self, plan, lease_id, deadline_s):
                raise NotImplementedError

            def describe(self, lease):
                return []

            def release(self, lease):
                return None
    '''))
    info = site / "demo_gpus-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-gpus\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[fleet.providers]\ndemo = demo_gpus:DemoProvider\n")
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    yield
    registry.refresh()
    for name in [m for m in sys.modules if m.startswith("demo_gpus")]:
        del sys.modules[name]


def test_a_third_party_package_adds_a_provider_with_its_section(third_party, tmp_path):
    assert "demo" in registry.names() and registry.names()[0] == "local"      # fleet's own first, in pyproject order
    (tmp_path / "fleet.toml").write_text('command = "x"\nprovider = "demo"\ntemplate = "demo-2gpu"\n\n'
                                         '[demo]\nzone = "eu-2"\n')
    provider = registry.create(load_config(cwd=tmp_path))
    assert provider.zone == "eu-2" and provider.offers("demo-2gpu", 4)[0].machines == 2
    (tmp_path / "fleet.toml").write_text('command = "x"\nprovider = "demo"\n[demo]\nzon = "eu-2"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cwd=tmp_path)
    assert err.value.one_line().startswith("fleet.toml:4: demo.zon: unknown key (did you mean 'zone'?)")


def test_unknown_provider_in_fleet_toml_lists_the_offered_ones(tmp_path):
    (tmp_path / "fleet.toml").write_text('command = "x"\nprovider = "gcp"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cwd=tmp_path)
    offered = ", ".join(repr(n) for n in registry.names(listed_only=True))     # whatever is registered
    assert err.value.one_line().startswith(f"fleet.toml:2: provider: must be one of {offered}, got 'gcp'")
    assert "'local'" in offered and "'fake'" not in offered


def test_finding_and_loading_providers_imports_no_cloud_or_ssh_library():
    code = ("import sys, fleet.cli.main\n"
            "from fleet.providers import registry\n"
            "[registry.provider_class(n) for n in registry.names()]; registry.settings_classes()\n"
            "print(sorted(m for m in ('boto3', 'botocore', 'paramiko', 'pulumi', 'psycopg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_fleet_offers_lists_any_providers_mixes(tmp_path):
    env = {**__import__("os").environ, "FLEET_HOME": str(tmp_path / "home")}
    out = subprocess.run([FLEET, "offers", "--gpus", "8", "--provider", "fake", "--json"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    import json
    offers = json.loads(out.stdout)["offers"]
    assert [(o["template"], o["machines"], o["gpus"]) for o in offers] == \
        [("fake-8gpu", 1, 8), ("fake-4gpu", 2, 8), ("fake-1gpu", 8, 8)]
    bad = subprocess.run([FLEET, "offers", "--gpus", "8", "--provider", "gpc"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert bad.returncode == 2 and "unknown provider 'gpc'" in bad.stderr and "Traceback" not in bad.stderr


def test_fleets_own_entries_are_read_like_toml_reads_them():
    import tomllib
    from fleet.providers.registry import GROUP, own_entries
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["entry-points"][GROUP]
    assert {n: e.target for n, e in own_entries().items()} == declared


def test_loading_one_of_fleets_own_providers_scans_no_installed_metadata():
    """`fleet status` with leases loads their providers: importlib.metadata (and the email parser
    it imports) cost more than the rest of a status with a few leases."""
    code = ("import sys\nfrom fleet.providers import registry\nregistry.provider_class('local')\n"
            "print('importlib.metadata' in sys.modules, 'tomllib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout


def test_a_providers_own_section_loads_only_that_provider(tmp_path):
    """[slurm] is owned by the provider named slurm: reading it imports no other provider's module
    (each costs `fleet up` tens of ms before anything is leased)."""
    (tmp_path / "fleet.toml").write_text('provider = "slurm"\ncommand = "true"\n[slurm]\npartition = "gpu"\n')
    code = textwrap.dedent(f"""
        import sys
        from fleet.config.loader import load_config
        config = load_config({str(tmp_path / 'fleet.toml')!r})
        print(sorted(m for m in sys.modules if m.startswith("fleet.providers.") and m.endswith(".provider")),
              config.provider_settings["slurm"].partition)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['fleet.providers.slurm.provider'] gpu"
