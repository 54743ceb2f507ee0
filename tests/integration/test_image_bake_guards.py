"""What an apply-mode bake refuses to make an image of, against a moto server with a scripted stand-in
for the builder's SSH session (a real bake's builder is an EC2 machine: the sandbox's loopback builder
is this computer, where neither a driver nor the bake's sudo grant exists). Every test: the builder is
terminated and its temporary security group deleted whatever happened."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")

from fleet.errors import InfrastructureError  # noqa: E402
from fleet.images import bake as bake_module  # noqa: E402
from fleet.images.bake import DRIVER_QUERY, BakeOptions, bake  # noqa: E402
from fleet.images.recipe import load_recipe  # noqa: E402
from fleet.images.store import find_image  # noqa: E402
from fleet.remote.ssh import Result  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MOTO_BASE = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"   # moto's catalogue has no 22.04

# A custom recipe that leaves out any cleanup step: fleet's own cleanup must run all the same.
NO_CLEANUP = f"""
[base]
name = "{MOTO_BASE}"
owners = ["099720109477"]
[builder]
gpu = false
[[steps]]
name = "install"
script = "scripts/install.sh"
"""


class FakeSFTP:
    def stat(self, path):
        return None

    def __getattr__(self, name):            # mkdir, put, putfo, chmod: nothing to do
        return lambda *a, **k: None


class FakeBuilder:
    """The builder's SSH session: answers each command by its first matching rule, records all."""

    def __init__(self, rules):
        self.rules = rules
        self.commands: list[tuple[str, dict, bytes | None]] = []

    def run(self, command, *, env=None, cwd=None, check=True, timeout=None, stdin=None, **_):
        line = command if isinstance(command, str) else " ".join(command)
        self.commands.append((line, dict(env or {}), stdin))
        for needle, result in self.rules:
            if needle in line:
                return result
        return Result(0, "ok\n", "")

    @contextlib.contextmanager
    def transfer(self):
        yield FakeSFTP()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def ec2(aws_env, fleet_home):
    return boto3.client("ec2", region_name="us-east-1")


@pytest.fixture
def images_dir(tmp_path, monkeypatch):
    root = tmp_path / "images"
    shutil.copytree(REPO / "images" / "common", root / "common")
    shutil.copytree(REPO / "images" / "pytorch-cuda", root / "pytorch-cuda")
    toml = root / "pytorch-cuda" / "recipe.toml"
    toml.write_text(toml.read_text().replace(
        "ubuntu/images/hvm-ssd-gp3/ubuntu-jammy-22.04-amd64-server-*", MOTO_BASE))
    (root / "no-cleanup" / "scripts").mkdir(parents=True)
    (root / "no-cleanup" / "recipe.toml").write_text(NO_CLEANUP)
    (root / "no-cleanup" / "scripts" / "install.sh").write_text("#!/bin/bash\ntrue\n")
    monkeypatch.setenv("FLEET_IMAGES_DIR", str(root))
    return root


def _bake(ec2, monkeypatch, recipe: str, rules):
    """An apply-mode bake with no sandbox (as against real AWS), SSH answered by FakeBuilder."""
    fake = FakeBuilder(rules)

    class Machine:
        workdir = "/home/fleet/work"

    monkeypatch.setattr(bake_module, "reach", lambda *a, **k: Machine())
    monkeypatch.setattr("fleet.remote.ssh.wait_ready", lambda machine, timeout=None: fake)
    options = BakeOptions(mode="apply", ssh_cidr="192.0.2.1/32", image_wait_s=30)
    try:
        return fake, bake(ec2, load_recipe(recipe), options), None
    except InfrastructureError as exc:
        return fake, None, exc


def _assert_builder_gone(ec2):
    instances = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:fleet:role", "Values": ["image-builder"]}])["Reservations"] for i in r["Instances"]]
    assert instances and {i["State"]["Name"] for i in instances} <= {"terminated", "shutting-down"}
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert not [g for g in groups if g["GroupName"].startswith("fleet-bake-")]


def test_fleet_cleanup_runs_even_when_the_recipe_has_none_and_sudo_left_is_refused(images_dir, ec2, monkeypatch):
    fake, result, err = _bake(ec2, monkeypatch, "no-cleanup", [("sudo -n true", Result(0, "", ""))])
    assert result is None and "still has passwordless sudo after fleet's cleanup" in str(err)
    assert "\n" not in str(err)
    cleanup = [(env, stdin) for line, env, stdin in fake.commands if line == "bash -s"]
    assert len(cleanup) == 1, "fleet's cleanup ran once, after the recipe's steps"
    env, script = cleanup[0]
    assert env["FLEET_BAKE_MODE"] == "apply" and env["FLEET_BAKE_DIR"] == "/home/fleet/work/fleet-bake"
    assert script.decode().rstrip().splitlines()[-1] == "as_root rm -f /etc/sudoers.d/90-fleet-bake"
    order = [line for line, _e, _s in fake.commands]
    assert order.index("bash -s") < order.index("sudo -n true")
    assert find_image(ec2, load_recipe("no-cleanup").content_hash) is None
    _assert_builder_gone(ec2)


def test_an_image_is_made_once_the_login_has_no_sudo(images_dir, ec2, monkeypatch):
    fake, result, err = _bake(ec2, monkeypatch, "no-cleanup", [("sudo -n true", Result(1, "", "a password is required"))])
    assert err is None, err
    assert result.steps[-1]["step"] == "fleet cleanup"
    assert result.verified[-1] == {"check": "no sudo", "command": "sudo -n true", "result": "ok",
                                   "output": "refused (exit 1)"}
    tags = {t["Key"]: t["Value"] for t in ec2.describe_images(ImageIds=[result.image_id])["Images"][0]["Tags"]}
    assert tags["fleet:base-image"] == result.base_image and result.base_image.startswith("ami-")
    _assert_builder_gone(ec2)


def test_a_failing_fleet_cleanup_makes_no_image(images_dir, ec2, monkeypatch):
    fake, result, err = _bake(ec2, monkeypatch, "no-cleanup", [
        ("bash -s", Result(5, "", "fleet's cleanup needs the bake's sudo, which a recipe step removed"))])
    assert result is None and str(err).startswith("fleet cleanup on the builder exited 5: fleet's cleanup needs")
    assert find_image(ec2, load_recipe("no-cleanup").content_hash) is None
    _assert_builder_gone(ec2)


@pytest.mark.parametrize("reported, ok", [
    ("550.127.05\n550.127.05\n", True),
    ("550.163.01\n", False),                 # the newest 550.x of a later day
    ("550.127.05\n550.90.07\n", False),
])
def test_a_gpu_image_needs_the_driver_version_the_recipe_pins(images_dir, ec2, monkeypatch, reported, ok):
    fake, result, err = _bake(ec2, monkeypatch, "pytorch-cuda", [
        (DRIVER_QUERY, Result(0, reported, "")), ("sudo -n true", Result(1, "", ""))])
    if ok:
        assert err is None, err
        assert [v for v in result.verified if v["check"] == "driver"][0]["output"] == "550.127.05"
    else:
        assert result is None
        assert f"the builder's NVIDIA driver is {', '.join(sorted(set(reported.split())))}, the recipe pins " \
               "550.127.05: refusing to make an image of it" in str(err)
        assert find_image(ec2, load_recipe("pytorch-cuda").content_hash) is None
    _assert_builder_gone(ec2)
