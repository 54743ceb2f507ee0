"""The shipped JSON Schema matches the key table; `fleet init` writes a starter that loads."""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
import typer

from fleet.cli.errors import main_guard
from fleet.cli.init import register
from fleet.config.json_schema import SCHEMA_ID
from fleet.config.loader import SCHEMA_FILE, json_schema, load_config
from fleet.config.schema import ARRAYS, MAPS, TABLES, TOP_LEVEL, provider_sections
from fleet.errors import ExitCode
from fleet.providers import registry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLEET_HEARTBEAT_TTL", raising=False)


def run_fleet(monkeypatch, *args: str) -> int:
    """`fleet ARGS` through the CLI's real error guard, with only the init command registered."""
    app = typer.Typer(add_completion=False)

    @app.callback()
    def _root() -> None:
        """fleet"""

    register(app)
    monkeypatch.setattr(sys, "argv", ["fleet", *args])
    return main_guard(app)


def test_shipped_schema_file_equals_the_generated_schema():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), \
        "fleet/fleet.schema.json is stale: run `python -m fleet.config.schema --write`"


def test_the_schema_has_a_stable_id_and_init_names_it_not_a_path_of_this_machine(tmp_path, monkeypatch):
    """A teammate's editor cannot open this laptop's site-packages: the first line is the schema's $id."""
    assert SCHEMA_ID.startswith("https://") and SCHEMA_ID.endswith("/fleet.schema.json")
    assert json_schema()["$id"] == SCHEMA_ID and json.loads(SCHEMA_FILE.read_text())["$id"] == SCHEMA_ID
    target = tmp_path / "exp"
    assert run_fleet(monkeypatch, "init", str(target)) == 0
    text = (target / "fleet.toml").read_text()
    assert text.splitlines()[0] == f"#:schema {SCHEMA_ID}"
    for local in (str(tmp_path), str(SCHEMA_FILE.parent), str(Path.home()), "site-packages", "file://"):
        assert local not in text, local
    assert not (tmp_path / "home" / "fleet.schema.json").exists()      # nothing written beside it either


def test_config_schema_prints_or_writes_the_schema_for_editors(tmp_path, monkeypatch, capsys):
    assert run_fleet(monkeypatch, "config", "schema") == 0
    assert json.loads(capsys.readouterr().out) == json_schema()
    out = tmp_path / "editor" / "fleet.schema.json"
    assert run_fleet(monkeypatch, "config", "schema", "-o", str(out)) == 0
    assert capsys.readouterr().out == f"wrote {out}: fleet.toml's JSON Schema, {SCHEMA_ID}\n"
    assert json.loads(out.read_text()) == json_schema() and [p.name for p in out.parent.iterdir()] == [out.name]
    (tmp_path / "file").write_text("")
    assert run_fleet(monkeypatch, "config", "schema", "-o", str(tmp_path / "file" / "x.json")) == ExitCode.ENVIRONMENT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fleet: error: cannot write ")


def test_schema_lists_every_key_of_the_table():
    props = json_schema()["properties"]
    assert set(props) == set(TOP_LEVEL) | set(TABLES) | set(MAPS) | set(ARRAYS) | set(provider_sections(listed_only=True))
    assert set(props["lease"]["properties"]) == set(TABLES["lease"][1])
    assert set(props["hosts"]["items"]["properties"]) == set(provider_sections()["hosts"].keys)
    assert set(props["aws"]["properties"]) == set(provider_sections()["aws"].keys)
    assert props["provider"]["enum"] == sorted(registry.names(listed_only=True))   # every provider offered...
    assert "fake" in registry.names() and "fake" not in props["provider"]["enum"]   # ...not the tests' fake


def test_schema_agrees_with_the_validator_on_examples(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json_schema())
    good = {"command": "x", "gpus": 2, "max_duration": "1h30m", "budget": "$5", "lease": {"heartbeat_ttl": 30},
            "env": {"A": "1"}, "hosts": [{"address": "h", "port": 22}], "prices": {"t": 0}}
    assert not list(validator.iter_errors(good))
    for bad in [{"gpus": 0}, {"provider": "gcp"}, {"max_duration": "soon"}, {"budget": 0}, {"gpu": 1},
                {"lease": {"heartbeat_tl": "1m"}}, {"env": {"BAD-NAME": "1"}}, {"hosts": [{"port": 22}]}]:
        assert list(validator.iter_errors({"command": "x", **bad})), bad


def test_init_writes_a_starter_that_loads_and_mentions_every_key(tmp_path, monkeypatch, capsys):
    target = tmp_path / "new-exp"
    assert run_fleet(monkeypatch, "init", str(target)) == 0
    written = target / "fleet.toml"
    assert "wrote" in capsys.readouterr().out
    text = written.read_text()
    cfg = load_config(cwd=target)
    assert cfg.project == "new-exp" and cfg.command == "python train.py"
    assert text.splitlines()[0] == f"#:schema {SCHEMA_ID}"
    # every key appears as `key =` (set or commented out) or as its table header, with a comment
    for key in list(TOP_LEVEL) + [k for _, keys in TABLES.values() for k in keys] + \
            [k for _, keys, _r in ARRAYS.values() for k in keys] + \
            [k for s in provider_sections(listed_only=True).values() for k in s.keys]:
        assert re.search(rf"^#? ?{key} = ", text, re.M), key
    for table in list(TABLES) + list(MAPS):
        assert re.search(rf"^#? ?\[{table}\]$", text, re.M), table
    assert re.search(r"^# \[\[hosts\]\]$", text, re.M)
    # the commented-out examples are valid too, once uncommented
    uncommented = re.sub(r'^# (?=\[|"?[A-Za-z_][\w.-]*"? = )', "", text, flags=re.M)
    full = tomllib.loads(uncommented)
    assert {"budgets", "data", "prices", "aws", "hosts", "secrets", "budget"} <= set(full)
    (target / "full.toml").write_text(uncommented)
    assert load_config("full.toml", cwd=target).budgets.idle_minutes == 20


def test_init_in_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_fleet(monkeypatch, "init") == 0
    assert load_config(cwd=tmp_path).project == tmp_path.name


def test_init_refuses_to_overwrite_without_force(tmp_path, monkeypatch, capsys):
    existing = tmp_path / "fleet.toml"
    existing.write_text('command = "mine"\n')
    assert run_fleet(monkeypatch, "init", str(tmp_path)) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fleet: error: ") and "--force" in err
    assert existing.read_text() == 'command = "mine"\n'
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == ["fleet.toml"]

    assert run_fleet(monkeypatch, "init", str(tmp_path), "--force") == 0
    assert load_config(cwd=tmp_path).command == "python train.py"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fleet.toml.")]


def test_digits_example_config_is_valid_against_loader_and_schema():
    cfg = load_config(cwd=REPO / "examples" / "digits")
    assert (cfg.command, cfg.template, cfg.per_gpu, cfg.max_duration_s) == ("python train.py", "local-1gpu",
                                                                             False, 1800)
    assert "requirements.txt" in cfg.setup and "import numpy" in cfg.setup
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(cfg.raw, json_schema())
