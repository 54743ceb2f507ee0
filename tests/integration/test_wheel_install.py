"""The built wheel, installed in a fresh venv and used from outside the repository: `fleet image ls`
reads the recipes shipped in the package, `fleet stack preview` finds the shipped Pulumi program and
stops at the missing pulumi CLI with one line, and the shipped program runs (under Pulumi's mocks)
as the module `fleet.stacks`, the way an installed `fleet stack` runs it.

The wheel is built from a copy of the sources (the repository's build/ is never written) without
build isolation, so no network is needed. Its dependencies come from the dev venv through a .pth
line, which adds that site-packages to sys.path after the fresh venv's own (its .pth files, the dev
venv's editable fleet among them, are not processed): `fleet` itself is the installed wheel's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "Pulumi.dev.yaml.example", "fleet", "stacks", "images")

# Runs inside the fresh venv: the packaged program through the same function `fleet stack` hands to
# the Automation API, under the stack tests' mocks and the example stack config.
PROGRAM_UNDER_MOCKS = """
import json, sys
import fleet, fleet.stacks
from fleet.providers.aws.stack import locate_project, packaged_program, run_packaged_program
sys.path.append(sys.argv[1])                 # tests/unit/stacks, for the mocks only
import pulumi
import fleet_stack_mocks as m
run = m.StackRun()
m._install(run, m.config_values(), None, m.AZS, "test")
box = {}

@pulumi.runtime.test
def program():
    run_packaged_program()
    root = pulumi.runtime.settings.get_root_resource()
    return pulumi.Output.from_input(root.outputs["fleet"]).apply(lambda v: box.__setitem__("fleet", v))

program()
project = locate_project(None)
print(json.dumps({"fleet": fleet.__file__, "stacks": fleet.stacks.__file__, "program": str(packaged_program()),
                  "inline": project.inline, "work_dir": str(project.work_dir),
                  "resources": len(run.custom), "templates": sorted(box["fleet"]["templates"])}))
"""


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            # symlinks=True: fleet/stacks and fleet/images/recipes stay links to stacks/ and images/,
            # as in a clone
            shutil.copytree(src, dest / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, wheel path): the wheel built from this tree, installed with --no-deps."""
    import setuptools
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("building the wheel needs setuptools>=77 (pip install -e '.[dev]')")
    root = tmp_path_factory.mktemp("wheel")
    src, dist, venv = root / "src", root / "dist", root / "venv"
    src.mkdir()
    _copy_sources(src)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("fleet_gpu-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(purelib, "dev-venv-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                              "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=180)
    assert install.returncode == 0, install.stdout + install.stderr
    return venv / "bin", wheel


def _env(bin_dir: Path, home: Path) -> dict[str, str]:
    # PATH: the fresh venv only (no pulumi CLI anywhere on it); no recipe override from the caller
    keep = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    return {**keep, "PATH": str(bin_dir), "HOME": str(home), "FLEET_HOME": str(home / "fleet-home")}


def test_the_wheel_carries_the_program_the_recipes_and_py_typed(installed):
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"fleet/py.typed", "fleet/stacks/__main__.py", "fleet/stacks/components/templates.py",
                "fleet/stacks/Pulumi.dev.yaml.example", "fleet/images/recipes/common/scripts/lib.sh",
                "fleet/state/migrations/0001_init.sql", "fleet/fleet.schema.json"}
    expected |= {f"fleet/images/recipes/{p.relative_to(REPO / 'images')}"
                 for p in (REPO / "images").rglob("*") if p.is_file()}
    assert expected - names == set()
    assert not any(n.startswith(("stacks/", "images/")) for n in names)   # nothing at the top level


def test_image_ls_from_outside_the_repo_lists_the_shipped_recipes(installed, aws_env, tmp_path):
    from fleet.images.recipe import list_recipes, load_recipe
    bin_dir, _ = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([str(bin_dir / "fleet"), "image", "ls", "--region", "us-east-1", "--json"],
                         cwd=work, env=_env(bin_dir, tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    listing = json.loads(out.stdout)
    assert listing["images"] == []
    # same recipes and the same content hashes as the checkout's: every file, executable bits included
    assert {u["recipe"]: u["hash"] for u in listing["unbaked"]} == {
        name: load_recipe(name).content_hash for name in list_recipes(REPO / "images")}


def test_init_from_the_wheel_names_the_shipped_schema_by_its_id(installed, tmp_path):
    """The starter's `#:schema` line is the schema's $id, never this venv's site-packages; the
    installed `fleet config schema` prints the schema shipped in the wheel, which carries that $id."""
    from fleet.config.json_schema import SCHEMA_ID
    bin_dir, wheel = installed
    env = _env(bin_dir, tmp_path)
    init = subprocess.run([str(bin_dir / "fleet"), "init", str(tmp_path / "exp")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    text = (tmp_path / "exp" / "fleet.toml").read_text()
    assert text.splitlines()[0] == f"#:schema {SCHEMA_ID}"
    assert str(bin_dir.parent) not in text and "site-packages" not in text and "file://" not in text
    printed = subprocess.run([str(bin_dir / "fleet"), "config", "schema"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    shipped = json.loads(zipfile.ZipFile(wheel).read("fleet/fleet.schema.json"))
    assert shipped["$id"] == SCHEMA_ID and json.loads(printed.stdout) == shipped


def test_stack_preview_from_outside_the_repo_stops_at_the_missing_pulumi_cli(installed, tmp_path):
    bin_dir, _ = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([str(bin_dir / "fleet"), "stack", "preview"], cwd=work, env=_env(bin_dir, tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("fleet: error: the pulumi CLI is not installed")
    version = subprocess.run([str(bin_dir / "fleet"), "--version"], cwd=work, env=_env(bin_dir, tmp_path),
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == "fleet 0.1.0", version.stderr


def test_the_packaged_program_runs_as_fleet_stacks(installed, tmp_path):
    pytest.importorskip("pulumi")
    pytest.importorskip("pulumi_aws")
    bin_dir, _ = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([str(bin_dir / "python"), "-c", PROGRAM_UNDER_MOCKS, str(REPO / "tests" / "unit" / "stacks")],
                         cwd=work, env=_env(bin_dir, tmp_path), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    site = bin_dir.parent
    assert Path(got["fleet"]).is_relative_to(site) and Path(got["stacks"]).is_relative_to(site)
    assert Path(got["program"]).is_relative_to(site)
    assert got["inline"] is True and got["work_dir"] == str(work)   # the stack config is looked for here
    assert got["resources"] == 35                                   # the default stack (docs/stacks.md)
    assert got["templates"] == ["aws-1gpu", "aws-4gpu", "aws-8gpu"]    # the example config's
