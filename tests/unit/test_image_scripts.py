"""The recipes' step scripts and fleet's own final cleanup, run here: in check mode (what the sandbox
bake runs: each prints what it would install) and in apply mode against stand-in commands on PATH
(curl, dpkg, apt-get, … record their arguments), so what a real bake would install is seen exactly."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fleet.images.builder import BAKE_SUDOERS
from fleet.images.finish import CLEANUP_SCRIPT
from fleet.images.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
KEYRING = b"stand-in cuda-keyring .deb\n"


@pytest.fixture
def tree(tmp_path):
    """pytorch-cuda's files as the bake uploads them: common/ under the recipe's own."""
    recipe = load_recipe("pytorch-cuda", REPO / "images")
    root = tmp_path / "recipe"
    for rel, path in recipe.files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / rel)
    return recipe, root


@pytest.fixture
def fakes(tmp_path):
    """A bin/ of stand-ins that log their argv to calls.log; curl writes KEYRING to its -o file."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("dpkg", "apt-get", "systemctl", "tee", "chmod", "cloud-init", "find", "truncate"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\ncat >/dev/null 2>&1 || true\n')
    (bin_dir / "sudo").write_text('#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n')
    (bin_dir / "curl").write_text(
        f'#!/bin/sh\necho "curl $*" >> {log}\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done\n'
        f'printf "%s" "{KEYRING.decode().strip()}" > "$out"\nprintf "\\n" >> "$out"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir, log


def _run(script: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def _env(recipe, mode: str, tmp_path: Path, path: str | None = None, **extra) -> dict:
    return {**recipe.step_env(), "FLEET_BAKE_MODE": mode, "TMPDIR": str(tmp_path),
            "PATH": path or os.environ["PATH"], "HOME": str(tmp_path), **extra}


def test_nvidia_step_installs_the_pinned_driver_and_toolkit_not_the_newest_of_the_branch(tree, tmp_path):
    recipe, root = tree
    proc = _run(root / "scripts" / "20-nvidia.sh", _env(recipe, "check", tmp_path), root)
    assert proc.returncode == 0, proc.stderr
    [install] = [line for line in proc.stdout.splitlines() if "apt-get install" in line]
    assert install.endswith("cuda-drivers-550=550.127.05-1 cuda-toolkit-12-4=12.4.1-1"), install


@pytest.mark.skipif(not shutil.which("sha256sum"), reason="needs coreutils' sha256sum")
@pytest.mark.parametrize("pin, installs", [
    (hashlib.sha256(KEYRING).hexdigest(), True),
    ("0" * 64, False),
    ("", False),
])
def test_the_keyring_deb_is_installed_only_with_the_sha256_the_recipe_pins(tree, fakes, tmp_path, pin, installs):
    recipe, root = tree
    bin_dir, log = fakes
    env = _env(recipe, "apply", tmp_path, path=f"{bin_dir}:{os.environ['PATH']}",
               FLEET_NVIDIA_KEYRING_SHA256=pin)
    proc = _run(root / "scripts" / "20-nvidia.sh", env, root)
    calls = log.read_text().splitlines() if log.exists() else []
    assert calls[0].startswith("curl -fsSL -o ") and calls[0].endswith("/cuda-keyring_1.1-1_all.deb")
    if installs:
        assert proc.returncode == 0, proc.stderr
        assert f"dpkg -i {tmp_path}/cuda-keyring.deb" in calls
        assert "apt-get install -y -q cuda-drivers-550=550.127.05-1 cuda-toolkit-12-4=12.4.1-1" in calls
    else:
        assert proc.returncode == 4
        assert not [c for c in calls if c.startswith(("dpkg", "apt-get"))], "nothing installed"
        got = hashlib.sha256(KEYRING).hexdigest()
        expect = (f"has sha256 {got}, the recipe pins {pin}: refusing" if pin
                  else f'has sha256 {got}: check it, then set keyring_sha256 = "{got}" under [nvidia]')
        assert expect in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "cuda-keyring.deb").exists()


def test_python_step_installs_the_pinned_pip_never_the_newest(tree, tmp_path):
    recipe, root = tree
    assert recipe.pip_version == "24.2"
    proc = _run(root / "scripts" / "30-python.sh", _env(recipe, "check", tmp_path), root)
    assert proc.returncode == 0, proc.stderr
    assert "would run: /opt/fleet/venv/bin/pip install -q pip==24.2" in proc.stdout
    assert "--upgrade" not in proc.stdout


def test_no_shipped_step_generalises_the_image_fleet_does_it_last(tree):
    """A recipe step that removed the bake's sudo would leave fleet's cleanup without it."""
    for name in ("base-cpu", "pytorch-cuda"):
        r = load_recipe(name, REPO / "images")
        for step in r.steps:
            assert BAKE_SUDOERS not in r.files()[step.script].read_text(), (name, step.script)
    lines = CLEANUP_SCRIPT.strip().splitlines()
    assert lines[-1] == f"as_root rm -f {BAKE_SUDOERS}"      # last, so its earlier sudo calls still work
    assert "ssh_host_" in CLEANUP_SCRIPT and "authorized_keys" in CLEANUP_SCRIPT
    assert "cloud-init clean" in CLEANUP_SCRIPT and "/etc/machine-id" in CLEANUP_SCRIPT


def test_fleet_cleanup_in_check_mode_prints_every_command(tmp_path):
    proc = subprocess.run(["bash", "-s"], input=CLEANUP_SCRIPT, capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "FLEET_BAKE_MODE": "check",
                               "FLEET_BAKE_DIR": str(tmp_path / "fleet-bake")})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()
    assert all(line.startswith("would run:") for line in out) and len(out) == 6
    assert out[-1].endswith(f"rm -f {BAKE_SUDOERS}") and str(tmp_path / "fleet-bake") in out[-2]


def test_fleet_cleanup_without_the_bakes_sudo_stops_before_touching_anything(fakes, tmp_path):
    bin_dir, log = fakes
    (bin_dir / "sudo").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")       # the login is not root
    (bin_dir / "id").chmod(0o755)
    proc = subprocess.run(["bash", "-s"], input=CLEANUP_SCRIPT, capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLEET_BAKE_MODE": "apply",
                               "FLEET_BAKE_DIR": str(tmp_path / "fleet-bake")})
    assert proc.returncode == 5 and "a recipe step removed (/etc/sudoers.d/90-fleet-bake)" in proc.stderr
    assert not log.exists()
