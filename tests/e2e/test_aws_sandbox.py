"""The whole AWS path as a user types it, through the no-account sandbox (scripts/aws_sandbox.py):
moto server + stack resources, instances bound to loopback sshd machines, `fleet up --provider aws`."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from tests.conftest import FLEET, REPO, processes_under, run_fleet

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """scripts/aws_sandbox.py running in the background; yields (env, FLEET_HOME). Stops it after."""
    with running_sandbox(tmp_path_factory.mktemp("aws-sandbox-home")) as started:
        yield started


_logins = itertools.count()


def separate_login_name() -> str:
    """The sandbox machines' login in a separated sandbox: one of its own per sandbox, so that a
    module removing its user never pulls one from under another module's sandbox still running."""
    return f"fleet-sbx-{os.getpid()}-{next(_logins)}"


@pytest.fixture(scope="module")
def separated_sandbox():
    """The sandbox as EC2 is for a detached run's node 0: the machines log in as an unprivileged
    user of this computer (as an instance's `fleet`; its name is env["FLEET_AWS_SANDBOX_LOGIN"]),
    node 0's supervisor as this process's user (as `fleet-supervisor`). Needs root; yields
    (env, FLEET_HOME) like `sandbox`."""
    if os.geteuid() != 0:
        pytest.skip("two logins on one sandbox machine need root (sshd switching users)")
    with running_separated_sandbox() as started:
        yield started


@pytest.fixture(scope="module")
def node0_sandbox(tmp_path_factory):
    """For detached runs supervised from node 0: the separated sandbox where this computer allows
    it (root), else the plain one (one user for the experiment and the supervisor)."""
    if os.geteuid() == 0:
        with running_separated_sandbox() as started:
            yield started
    else:
        with running_sandbox(tmp_path_factory.mktemp("aws-sandbox-home")) as started:
            yield started


@contextlib.contextmanager
def running_separated_sandbox():
    name = separate_login_name()
    with separate_login(name), traversable_home() as home, \
            running_sandbox(home, FLEET_AWS_SANDBOX_LOGIN=name) as started:
        yield started


@contextlib.contextmanager
def separate_login(name):
    """An unprivileged user (made if missing, removed after if made here): no password, yet not
    locked ("!", which sshd without PAM refuses); home "/" (sshd must be able to enter it; the
    machine's HOME is its workdir anyway)."""
    import pwd
    made = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh",
                               "-p", "*", name]).returncode == 0
        pwd.getpwnam(name)    # made here, or by someone else meanwhile
    try:
        yield name
    finally:
        if made:
            subprocess.run(["userdel", name], check=False)


@contextlib.contextmanager
def traversable_home():
    """A FLEET_HOME whose path another login may traverse to its machines (pytest's tmp is 0700)."""
    import shutil
    import tempfile
    from pathlib import Path
    base = Path(tempfile.mkdtemp(prefix="fleet-sandbox-"))
    try:
        os.chmod(base, 0o711)
        (base / "home").mkdir(mode=0o700)
        yield base / "home"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def running_sandbox(home, **extra_env):
    """The sandbox with FLEET_HOME `home` (and `extra_env` in its environment and the tests')."""
    # The suite's own CI mode (.ci/run) must not reach the fleet commands the tests run here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("CI", "GITHUB_ACTIONS")}
    env.update(FLEET_HOME=str(home), FLEET_USER="tester", **extra_env)
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "aws_sandbox.py")], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    exports = {}
    try:
        end = time.monotonic() + 60
        for line in proc.stdout:
            if line.startswith("export "):
                key, _, value = line[len("export "):].strip().partition("=")
                exports[key] = value.strip("'")
            if line.startswith("# sandbox ready") or time.monotonic() > end:
                break
        assert {"AWS_ENDPOINT_URL", "FLEET_AWS_OUTPUTS", "FLEET_AWS_SANDBOX"} <= set(exports), exports
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        yield {**env, **exports}, home
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert processes_under(home) == []


def _instances(env) -> list[dict]:
    import boto3
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def test_fleet_up_aws_8_gpus_through_the_sandbox(sandbox, tmp_path):
    env, home = sandbox
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        'project = "aws-e2e"\nprovider = "aws"\ntemplate = "aws-8gpu"\nmax_duration = "10m"\n'
        'command = "echo rank=$FLEET_NODE_RANK of $FLEET_NUM_NODES gpus=$CUDA_VISIBLE_DEVICES '
        'master=$FLEET_MASTER_ADDR"\n')
    offers = run_fleet(["offers", "--gpus", "8", "--template", "aws-8gpu", "--json"], cwd=exp, env=env)
    assert offers.returncode == 0, offers.stderr
    cheapest = json.loads(offers.stdout)["offers"][0]
    assert (cheapest["instance_type"], cheapest["machines"]) == ("g6.12xlarge", 2)

    up = run_fleet(["up", "--gpus", "8", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0
    assert "rank=0 of 2 gpus=0,1,2,3" in up.stderr + up.stdout and "rank=1 of 2" in up.stderr + up.stdout
    # ranks rendezvous where they can really reach each other: loopback here, never moto's fake VPC IPs
    assert (up.stderr + up.stdout).count("master=127.0.0.1") == 2
    launched = [i for i in _instances(env)
                if {"Key": "fleet:project", "Value": "aws-e2e"} in i.get("Tags", [])]
    assert len(launched) == 2 and {i["InstanceType"] for i in launched} == {"g6.12xlarge"}
    assert {i["State"]["Name"] for i in launched} == {"terminated"}       # released, always
    assert not list((home / "aws-sandbox" / "machines").iterdir())         # sandbox machines gone too
    status = run_fleet(["status", "--json"], cwd=exp, env=env)
    assert json.loads(status.stdout)["leases"] == []
    reap = run_fleet(["reap", "--dry-run", "--json"], cwd=exp, env=env)
    assert reap.returncode == 0 and json.loads(reap.stdout)["actions"] == []


@pytest.mark.parametrize("args, env_change, code, needle", [
    (["offers", "--gpus", "3", "-t", "aws-8gpu"], {}, 2, "exactly 3 GPUs"),
    (["offers", "--gpus", "8", "-t", "aws-99gpu"], {}, 4, "not in the stack outputs"),
    (["offers", "--gpus", "8"], {"FLEET_AWS_OUTPUTS": "/nonexistent/outputs.json"}, 4, "does not exist"),
    (["offers", "--gpus", "8"], {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, 3,
     "no AWS credentials"),
])
def test_bad_input_is_one_line(sandbox, tmp_path, args, env_change, code, needle):
    env, _ = sandbox
    env = dict(env, AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    for key, value in env_change.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run([FLEET, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error:") and needle in lines[0], proc.stderr


def test_older_outputs_version_says_to_refresh(sandbox, tmp_path):
    env, _ = sandbox
    data = json.loads(open(env["FLEET_AWS_OUTPUTS"]).read())
    data["fleet"]["version"] = 0
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    proc = run_fleet(["offers", "--gpus", "8"], cwd=tmp_path, env=dict(env, FLEET_AWS_OUTPUTS=str(old)))
    assert proc.returncode == 2 and "older" in proc.stderr and "fleet stack up" in proc.stderr


def test_kept_lease_shows_in_status_and_fleet_down_ends_it_without_sandbox_env(sandbox, tmp_path):
    env, home = sandbox
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "aws-keep"\nprovider = "aws"\ntemplate = "aws-4gpu"\n'
                                    'max_duration = "10m"\ncommand = "true"\n')
    up = run_fleet(["up", "--gpus", "4", "--keep", "5m", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    lease_id = json.loads(up.stdout)["lease_id"]
    leases = json.loads(run_fleet(["status", "--json"], cwd=exp, env=env).stdout)["leases"]
    assert [(v["id"], v["health"]) for v in leases] == [(lease_id, "up")]
    # A fresh shell: no sandbox flag and no outputs file; the lease's recorded region is enough.
    bare = {k: v for k, v in env.items() if k not in ("FLEET_AWS_SANDBOX", "FLEET_AWS_OUTPUTS")}
    down = run_fleet(["down", lease_id], cwd=exp, env=bare)
    assert down.returncode == 0, down.stderr
    mine = [i for i in _instances(env) if {"Key": "fleet:lease", "Value": lease_id} in i.get("Tags", [])]
    assert mine and {i["State"]["Name"] for i in mine} == {"terminated"}
    assert not list((home / "aws-sandbox" / "machines").iterdir())


def test_provider_aws_without_a_template_plans_by_gpu_type_and_records_what_it_launched(sandbox, tmp_path):
    """docs/stacks.md's `fleet up --provider aws --gpus 8` with no template (the provider's own
    default, not local-4gpu), `--gpus TYPE:N` across templates, the plan before spending, and what
    was launched (instance type, lifecycle, zone) in the summary, the headline and `fleet status`."""
    env, _ = sandbox
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "aws-types"\nmax_duration = "10m"\ncommand = "true"\n')
    plan = run_fleet(["up", "--provider", "aws", "--gpus", "8", "--dry-run", "--json"], cwd=exp, env=env)
    assert plan.returncode == 0, plan.stderr
    quote = json.loads(plan.stdout)["plan"]
    assert (quote["template"], quote["machines"], quote["instance_type"]) == ("aws-8gpu", 2, "g6.12xlarge")
    assert quote["lifecycle"] == "spot" and quote["region"] == "us-east-1" and quote["zones"]
    assert quote["simulated"] is True
    one = json.loads(run_fleet(["up", "--provider", "aws", "--gpus", "1", "--dry-run", "--json"], cwd=exp,
                               env=env).stdout)["plan"]
    assert (one["template"], one["machines"]) == ("aws-1gpu", 1)   # the default cannot give 1: one that can
    assert Decimal(quote["max_cost_usd"]) == (Decimal(quote["price_per_hour_usd"]) * 10 / 60).quantize(Decimal("1e-6"))
    text = run_fleet(["up", "--provider", "aws", "--gpus", "A100:8", "--dry-run", "--budget", "1"], cwd=exp,
                     env=env)
    assert text.returncode == 0, text.stderr
    assert "1 × p4d.24xlarge (template aws-8gpu)" in text.stdout and "A100" in text.stdout
    assert "costs at most $1.00" in text.stdout
    none = run_fleet(["up", "--provider", "aws", "--gpus", "H100:8", "--dry-run"], cwd=exp, env=env)
    lines = none.stderr.strip().splitlines()
    assert none.returncode == 2 and len(lines) == 1, none.stderr
    assert "no machine of the aws provider has 8 × H100 GPUs; it has: " in lines[0] and "L4" in lines[0]
    assert not _instances_of(env, "aws-types")           # planning launched nothing

    cheapest_l4 = json.loads(run_fleet(["up", "--provider", "aws", "--gpus", "L4:8", "--dry-run", "--json"],
                                       cwd=exp, env=env).stdout)["plan"]
    assert cheapest_l4["price_per_hour_usd"] is not None and "L4" in cheapest_l4["gpu"]
    assert Decimal(cheapest_l4["price_per_hour_usd"]) <= Decimal(quote["price_per_hour_usd"])   # across templates

    up = run_fleet(["up", "--provider", "aws", "--gpus", "8", "--keep", "5m", "--json"], cwd=exp, env=env,
                   timeout=240)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    launched = summary["launched"]
    instances = {i["InstanceId"]: i for i in _instances_of(env, "aws-types")}
    assert "gpu_type" not in summary and [m["rank"] for m in launched] == [0, 1]
    for m in launched:
        inst = instances[m["id"]]
        assert m["instance_type"] == inst["InstanceType"] == "g6.12xlarge"
        assert m["zone"] == inst["Placement"]["AvailabilityZone"]
        assert m["lifecycle"] == ("spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand")
    assert "lease: 2 × g6.12xlarge (aws-8gpu) = 8 GPUs, spot" in up.stderr
    record = json.loads(run_fleet(["runs", "show", summary["run_id"], "--json"], cwd=exp, env=env).stdout)
    assert record["launched"] == launched                 # the run record keeps the same per machine
    status = run_fleet(["status"], cwd=exp, env=env)
    zone = launched[0]["zone"]
    assert "g6.12xlarge" in status.stdout and zone in status.stdout and "(aws-8gpu)" in status.stdout
    down = run_fleet(["down", summary["lease_id"]], cwd=exp, env=env)
    assert down.returncode == 0, down.stderr


def _instances_of(env, project: str) -> list[dict]:
    return [i for i in _instances(env) if {"Key": "fleet:project", "Value": project} in i.get("Tags", [])]


def test_fleet_image_bake_base_cpu_works_in_the_sandbox_as_documented(sandbox, tmp_path):
    """docs/aws.md's `fleet image bake base-cpu` with the shipped recipes, unchanged: the sandbox serves a
    base image matching their [base] filter (Canonical's Ubuntu 22.04 name, owner, architecture), the
    builder is launched from it, the check-mode bake makes the image, and the builder is gone after."""
    import boto3
    from fleet.images.recipe import load_recipe
    env, home = sandbox
    env = {k: v for k, v in env.items() if k != "FLEET_IMAGES_DIR"}          # the shipped recipes
    base = load_recipe("base-cpu", REPO / "images").base
    bake = run_fleet(["image", "bake", "base-cpu", "--json"], cwd=tmp_path, env=env, timeout=240)
    assert bake.returncode == 0, bake.stderr
    baked = json.loads(bake.stdout)
    assert baked["mode"] == "check" and baked["image_id"].startswith("ami-") and not baked["reused"]
    assert [(s["step"], s["exit_code"]) for s in baked["steps"]][-1] == ("fleet cleanup", 0)
    assert [s["exit_code"] for s in baked["steps"]] == [0, 0, 0, 0, 0]
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    (builder,) = [i for i in _instances(env) if i["InstanceId"] == baked["builder_instance_id"]]
    assert builder["State"]["Name"] in ("terminated", "shutting-down")
    (launched_from,) = ec2.describe_images(ImageIds=[builder["ImageId"]])["Images"]
    import fnmatch
    assert fnmatch.fnmatchcase(launched_from["Name"], base.name) and launched_from["OwnerId"] in base.owners
    assert launched_from["Architecture"] == base.architecture
    assert baked["base_image"] == builder["ImageId"]
    assert not list((home / "aws-sandbox" / "machines").iterdir())         # the builder's machine too
    listed = json.loads(run_fleet(["image", "ls", "--json"], cwd=tmp_path, env=env).stdout)
    assert [(i["recipe"], i["image_id"], i["current"]) for i in listed["images"]] == [
        ("base-cpu", baked["image_id"], True)]
    again = run_fleet(["image", "bake", "base-cpu", "--json"], cwd=tmp_path, env=env, timeout=120)
    assert again.returncode == 0 and json.loads(again.stdout)["reused"] is True


def test_dry_run_says_where_its_price_comes_from(sandbox, tmp_path):
    """The plan names its price source: in the sandbox by default the shipped list price table (its
    date), with nothing asked of the Price List API; with FLEET_AWS_LIVE_PRICES=1 the sandbox's spot
    price history per AZ (moto: a placeholder price), and the on-demand fallback as one warning line."""
    import re
    env, _ = sandbox
    table_date = json.loads((REPO / "fleet" / "providers" / "aws" / "prices.json").read_text())["retrieved"]
    args = ["up", "--provider", "aws", "--template", "aws-1gpu", "--gpus", "1", "--dry-run"]
    plain = run_fleet(args, cwd=tmp_path, env=env)
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    assert f"(list price table of {table_date} (us-east-1))" in plain.stdout, plain.stdout
    live = run_fleet(args, cwd=tmp_path, env=dict(env, FLEET_AWS_LIVE_PRICES="1"))
    assert live.returncode == 0, live.stderr
    assert re.search(r"price      would cost \$0\.00001 per hour \(spot \$0\.00001/h \(us-east-1\w, "
                     r"\d{4}-\d{2}-\d{2}\); on-demand \$0\.8048/h where there is no spot capacity\)", live.stdout), \
        live.stdout
    assert "at most    $3.22 = 4h max_duration × $0.805/h (on-demand: spot may rise to it" in live.stdout
    (warning,) = live.stderr.strip().splitlines()
    assert warning.startswith("fleet: warning: AWS Price List API unavailable (")
    assert warning.endswith(f"list price table of {table_date} (us-east-1)")
