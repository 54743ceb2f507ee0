"""`fleet image bake` against a moto server, with a loopback sshd standing in for the builder
(the AWS sandbox's address map). The shipped recipes' scripts run in check mode; a small recipe runs
in apply mode to show the runner really executes steps and verification. After every test: the
builder is terminated, its sandbox machine is gone, and no process is left (fleet_home checks)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")

from fleet.errors import InfrastructureError, UsageError  # noqa: E402
from fleet.images.bake import BakeOptions, bake  # noqa: E402
from fleet.images.recipe import load_recipe  # noqa: E402
from fleet.images.store import find_image, list_images  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# moto's catalogue has Canonical images, but not 22.04: point copies of the recipes at one it has.
MOTO_BASE = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"


@pytest.fixture
def images_dir(tmp_path, monkeypatch):
    root = tmp_path / "images"
    shutil.copytree(REPO / "images" / "common", root / "common")     # shared steps of both recipes
    for name in ("base-cpu", "pytorch-cuda"):
        shutil.copytree(REPO / "images" / name, root / name)
        toml = root / name / "recipe.toml"
        toml.write_text(toml.read_text().replace(
            "ubuntu/images/hvm-ssd-gp3/ubuntu-jammy-22.04-amd64-server-*", MOTO_BASE))
    monkeypatch.setenv("FLEET_IMAGES_DIR", str(root))
    return root


@pytest.fixture
def sandbox(fleet_home, aws_env, monkeypatch):
    from fleet.providers.aws.sandbox import Sandbox
    monkeypatch.setenv("FLEET_AWS_SANDBOX", "1")
    return Sandbox()


@pytest.fixture
def ec2(aws_env):
    return boto3.client("ec2", region_name="us-east-1")


def _instances(ec2, **filters):
    out = []
    for r in ec2.describe_instances(Filters=[{"Name": k, "Values": [v]} for k, v in filters.items()])[
            "Reservations"]:
        out.extend(r["Instances"])
    return out


def _assert_builders_gone(ec2, sandbox):
    builders = _instances(ec2, **{"tag:fleet:role": "image-builder"})
    assert builders, "a builder was launched"
    assert {i["State"]["Name"] for i in builders} <= {"terminated", "shutting-down"}
    assert sandbox.bindings() == []


def test_bake_shipped_recipe_in_check_mode_then_rebake_is_a_noop(images_dir, sandbox, ec2):
    recipe = load_recipe("base-cpu")
    messages = []
    result = bake(ec2, recipe, BakeOptions(mode="check", sandbox=sandbox), progress=messages.append)

    assert not result.reused and result.mode == "check"
    assert result.image_name == f"fleet-base-cpu-{recipe.content_hash[:12]}"
    assert [s["exit_code"] for s in result.steps] == [0, 0, 0, 0, 0]
    assert any("would run:" in line for s in result.steps for line in s["output_tail"])
    # fleet's own cleanup ends every bake, the bake's sudo removed last
    assert result.steps[-1]["step"] == "fleet cleanup"
    assert result.steps[-1]["output_tail"][-1].endswith("rm -f /etc/sudoers.d/90-fleet-bake")
    checks = {v["check"]: v for v in result.verified}
    assert checks["python"]["result"] == "ok" and checks["python"]["output"].startswith("Python 3")
    assert checks["agent"]["result"] == "ok"
    assert checks["recipe"]["result"].startswith("syntax ok")
    image = ec2.describe_images(ImageIds=[result.image_id])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert image["State"] == "available" and image["Name"] == result.image_name
    assert tags["fleet:recipe-hash"] == recipe.content_hash and tags["fleet:recipe"] == "base-cpu"
    assert tags["fleet:bake-mode"] == "check"
    [builder] = _instances(ec2, **{"tag:fleet:role": "image-builder"})
    assert tags["fleet:base-image"] == builder["ImageId"] == result.base_image
    assert any(m.startswith(f"base image {builder['ImageId']} (") and "the newest match; pin it under "
               "[base.ami]" in m for m in messages)
    _assert_builders_gone(ec2, sandbox)
    assert any("terminating builder" in m for m in messages)

    launched = len(_instances(ec2))
    again = bake(ec2, load_recipe("base-cpu"), BakeOptions(mode="check", sandbox=sandbox))
    assert again.reused and again.image_id == result.image_id
    assert len(_instances(ec2)) == launched, "re-baking an unchanged recipe launches nothing"
    # a changed recipe is a new hash, hence a new image
    (images_dir / "common" / "scripts" / "10-system.sh").write_text(
        (images_dir / "common" / "scripts" / "10-system.sh").read_text() + "\n# changed\n")
    assert find_image(ec2, load_recipe("base-cpu").content_hash) is None
    listed = {i.image_id: i for i in list_images(ec2)}
    assert listed[result.image_id].current is False        # stale against the edited recipe


def test_gpu_recipe_in_the_sandbox_skips_nvidia_smi_honestly(images_dir, sandbox, ec2):
    result = bake(ec2, load_recipe("pytorch-cuda"), BakeOptions(mode="check", sandbox=sandbox))
    gpu = [v for v in result.verified if v["check"] == "gpu"]
    assert gpu and (gpu[0]["result"].startswith("skipped") or gpu[0]["result"] == "ok")
    nvidia = next(s for s in result.steps if s["script"] == "scripts/20-nvidia.sh")
    assert any("cuda-toolkit-12-4" in line for line in nvidia["output_tail"])
    _assert_builders_gone(ec2, sandbox)


def test_failing_step_terminates_the_builder_and_makes_no_image(images_dir, sandbox, ec2):
    script = images_dir / "common" / "scripts" / "30-python.sh"
    script.write_text(script.read_text().replace('require_version python.version "$FLEET_PYTHON_VERSION"',
                                                 'echo "mirror unreachable" >&2; exit 7'))
    recipe = load_recipe("base-cpu")
    with pytest.raises(InfrastructureError) as err:
        bake(ec2, recipe, BakeOptions(mode="check", sandbox=sandbox))
    msg = str(err.value)
    assert "step 'python environment'" in msg and "exited 7" in msg and "mirror unreachable" in msg
    _assert_builders_gone(ec2, sandbox)
    assert find_image(ec2, recipe.content_hash) is None


APPLY_RECIPE = """
description = "apply-mode runner test: steps really run on the (loopback) builder"
[base]
name = "%s"
owners = ["099720109477"]
[builder]
instance_type = "m6i.large"
gpu = false
[[steps]]
name = "install agent"
script = "scripts/install.sh"
[verify]
python = "python3"
agent = "../installed/agent.py"
commands = ["test -s ../installed/marker", "%s"]
""" % (MOTO_BASE, "{verify}")


def _apply_recipe(root: Path, verify: str) -> None:
    d = root / "apply-test"
    (d / "scripts").mkdir(parents=True)
    (d / "recipe.toml").write_text(APPLY_RECIPE.replace("{verify}", verify))
    (d / "scripts" / "install.sh").write_text(
        '#!/bin/bash\nset -eu\n[ "$FLEET_BAKE_MODE" = apply ]\nmkdir -p ../installed\n'
        'cp "$FLEET_AGENT_SRC" ../installed/agent.py\necho "$FLEET_RECIPE_HASH" > ../installed/marker\n')


def _no_local_sudo():
    """The sandbox builder is this computer: where its user has passwordless sudo, an apply-mode bake
    is (rightly) refused by the no-sudo check, which tests/integration/test_image_bake_guards.py covers."""
    import subprocess
    try:
        if subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=10).returncode == 0:
            pytest.skip("this computer's user has passwordless sudo: an apply-mode sandbox bake is refused")
    except FileNotFoundError:
        pass


def test_apply_mode_runs_steps_and_verification_for_real(tmp_path, sandbox, ec2, monkeypatch):
    _no_local_sudo()
    monkeypatch.setenv("FLEET_IMAGES_DIR", str(tmp_path / "imgs"))
    _apply_recipe(tmp_path / "imgs", "grep -q . ../installed/marker")
    result = bake(ec2, load_recipe("apply-test"), BakeOptions(mode="apply", sandbox=sandbox))
    assert result.mode == "apply" and [v["result"] for v in result.verified] == ["ok"] * 5
    assert result.verified[-1]["check"] == "no sudo"
    # the recipe has no cleanup step: fleet's runs anyway (printed only: the sandbox builder is this computer)
    assert [s["step"] for s in result.steps] == ["install agent", "fleet cleanup"]
    assert any("would run:" in line and "90-fleet-bake" in line for line in result.steps[-1]["output_tail"])
    _assert_builders_gone(ec2, sandbox)


def test_apply_mode_failed_verification_fails_the_bake(tmp_path, sandbox, ec2, monkeypatch):
    _no_local_sudo()
    monkeypatch.setenv("FLEET_IMAGES_DIR", str(tmp_path / "imgs"))
    _apply_recipe(tmp_path / "imgs", "python3 -c 'import torch_not_installed'")
    recipe = load_recipe("apply-test")
    with pytest.raises(InfrastructureError, match="verification `python3 -c 'import torch_not_installed'`"):
        bake(ec2, recipe, BakeOptions(mode="apply", sandbox=sandbox))
    _assert_builders_gone(ec2, sandbox)
    assert find_image(ec2, recipe.content_hash) is None


def test_check_mode_is_refused_outside_the_sandbox(images_dir, ec2):
    # other tests on this moto server may have left (terminated) instances: compare, not expect none
    before = {i["InstanceId"] for i in _instances(ec2)}
    with pytest.raises(UsageError, match="only in the AWS sandbox"):
        bake(ec2, load_recipe("base-cpu"), BakeOptions(mode="check", sandbox=None))
    assert {i["InstanceId"] for i in _instances(ec2)} == before


def test_cli_bake_and_ls(images_dir, sandbox, ec2, tmp_path):
    from tests.conftest import run_fleet
    proc = run_fleet(["image", "bake", "base-cpu", "--region", "us-east-1", "--json"], cwd=tmp_path,
                     timeout=180)
    assert proc.returncode == 0, proc.stderr
    baked = json.loads(proc.stdout)
    assert baked["mode"] == "check" and baked["image_id"].startswith("ami-")
    proc = run_fleet(["image", "ls", "--region", "us-east-1", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert [(i["recipe"], i["image_id"], i["current"]) for i in listing["images"]] == [
        ("base-cpu", baked["image_id"], True)]
    assert listing["images"][0]["base_image"] == baked["base_image"]
    assert baked["base_image"].startswith("ami-")
    assert [u["recipe"] for u in listing["unbaked"]] == ["pytorch-cuda"]
    proc = run_fleet(["image", "bake", "no-such-recipe", "--region", "us-east-1"], cwd=tmp_path)
    assert proc.returncode == 4 and proc.stderr.startswith("fleet: error: no recipe 'no-such-recipe'")
    _assert_builders_gone(ec2, sandbox)


def test_real_bake_without_network_access_is_refused_before_launching(images_dir, ec2, aws_env):
    before = {i["InstanceId"] for i in _instances(ec2)}
    with pytest.raises(UsageError, match="network access for SSH"):
        bake(ec2, load_recipe("base-cpu"), BakeOptions(mode="apply", sandbox=None))
    assert {i["InstanceId"] for i in _instances(ec2)} == before


def test_a_builder_of_a_stack_carries_its_tag_so_that_stacks_reaper_may_end_it(images_dir, sandbox, ec2):
    """The reaper and its Lambda judge only their own stack's instances: a builder without the tag
    would never be ended by them if it hung past its expiry."""
    from datetime import datetime, timedelta, timezone

    from fleet.providers.aws.reap import judge
    bake(ec2, load_recipe("base-cpu"), BakeOptions(mode="check", sandbox=sandbox, stack="dev"))
    [builder] = _instances(ec2, **{"tag:fleet:role": "image-builder"})
    tags = {t["Key"]: t["Value"] for t in builder["Tags"]}
    assert tags["fleet:stack"] == "dev"
    later = datetime.now(timezone.utc) + timedelta(days=1)
    assert judge(builder, None, later).startswith("expired")


def _moto_base(ec2) -> dict:
    images = ec2.describe_images(Owners=["099720109477"], Filters=[{"Name": "name", "Values": [MOTO_BASE]}])
    return max(images["Images"], key=lambda i: i.get("CreationDate", ""))


def test_a_pinned_base_image_is_the_one_the_builder_starts_from(images_dir, sandbox, ec2):
    base = _moto_base(ec2)
    toml = images_dir / "base-cpu" / "recipe.toml"
    toml.write_text(toml.read_text().replace("[builder]", f'[base.ami]\nus-east-1 = "{base["ImageId"]}"\n\n[builder]'))
    messages = []
    result = bake(ec2, load_recipe("base-cpu"), BakeOptions(mode="check", sandbox=sandbox),
                  progress=messages.append)
    [builder] = _instances(ec2, **{"tag:fleet:role": "image-builder"})
    assert builder["ImageId"] == base["ImageId"] == result.base_image
    assert f"base image {base['ImageId']} ({base['Name']}, {base['CreationDate']}): pinned by [base.ami]" in messages


@pytest.mark.parametrize("which", ["another owner's", "unknown"])
def test_a_pinned_base_image_outside_the_filter_is_refused_before_launching(images_dir, sandbox, ec2, which):
    """A pin is checked against [base]: an image of another owner or name is not taken silently."""
    other = (ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"] if which != "unknown"
             else "ami-0000000000000dead")
    toml = images_dir / "base-cpu" / "recipe.toml"
    toml.write_text(toml.read_text().replace("[builder]", f'[base.ami]\nus-east-1 = "{other}"\n\n[builder]'))
    before = {i["InstanceId"] for i in _instances(ec2)}
    from fleet.errors import NotFound
    with pytest.raises(NotFound, match=rf"base image {other} \(\[base.ami\] us-east-1\) is not an available"):
        bake(ec2, load_recipe("base-cpu"), BakeOptions(mode="check", sandbox=sandbox))
    assert {i["InstanceId"] for i in _instances(ec2)} == before
