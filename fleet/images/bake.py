"""`fleet image bake RECIPE`: recipe → builder → steps over SSH → verify → image tagged with the
recipe hash → builder terminated (always, even on failure or Ctrl-C).

Two modes, chosen by the caller and recorded on the image (tag fleet:bake-mode):
- apply: the real bake. Steps run for real on a builder launched from the recipe's base image;
  verification runs the image's Python and agent, `nvidia-smi` for GPU recipes (a GPU recipe whose
  builder has no working driver, or another driver version than the recipe pins, fails), and the
  recipe's own verify commands. Then fleet's own cleanup runs whatever the recipe's steps were, and
  the image is refused while the builder's login still has passwordless sudo (finish.py).
- check: for the AWS sandbox, where the "builder" is a loopback sshd on this computer. Steps run
  with FLEET_BAKE_MODE=check: each validates its inputs and the tools it needs and prints the
  commands it would run (see images/common/scripts/lib.sh) — nothing is installed. Verification runs
  Python and the uploaded agent, `nvidia-smi` only if a GPU is really there, and syntax-checks the
  recipe's verify commands. Refused against real AWS: a check-mode image is not a real image.
"""
from __future__ import annotations

import os
import shlex
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InfrastructureError, UsageError
from . import finish
from .builder import Builder, base_image, destroy, launch, reach, temporary_security_group
from .recipe import HASH_TAG, RECIPE_TAG, Recipe
from .store import BASE_TAG, MODE_TAG, find_image

MODES = ("apply", "check")
REMOTE_DIR = "fleet-bake"
DRIVER_QUERY = "nvidia-smi --query-gpu=driver_version --format=csv,noheader"


@dataclass
class BakeResult:
    recipe: str
    content_hash: str
    image_name: str
    image_id: str
    reused: bool                         # an image for this hash existed: nothing was launched
    mode: str
    builder_instance_id: str | None = None
    base_image: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    verified: list[dict[str, Any]] = field(default_factory=list)
    cleanup_problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BakeOptions:
    mode: str = "apply"
    subnet_id: str | None = None
    security_group_id: str | None = None
    stack: str | None = None             # the builder carries fleet:stack: that stack's reaper may end it
    ssh_cidr: str | None = None          # no stack: open the builder to this CIDR in the default VPC
    sandbox: Any = None                  # fleet.providers.aws.sandbox.Sandbox in the sandbox
    max_s: int = 3 * 3600                # the builder ends itself after this long, whatever happens
    ready_timeout_s: float = 900
    step_timeout_s: float = 3600
    image_wait_s: float = 3600
    keys_dir: Path | None = None


Progress = Callable[[str], None]


def bake(ec2, recipe: Recipe, options: BakeOptions, progress: Progress = lambda _m: None) -> BakeResult:
    if options.mode not in MODES:
        raise UsageError(f"bake mode must be one of {', '.join(MODES)}, got {options.mode!r}")
    if options.mode == "check" and not options.sandbox:
        raise UsageError("check-mode bakes run only in the AWS sandbox (FLEET_AWS_SANDBOX=1)",
                         hint="a check-mode image installs nothing, so it must never reach a real account")
    existing = find_image(ec2, recipe.content_hash)
    if existing is not None:
        progress(f"{recipe.image_name} exists ({existing.image_id}, {existing.state}): nothing to bake")
        if existing.state == "pending":
            _wait_available(ec2, existing.image_id, options)
        return BakeResult(recipe.name, recipe.content_hash, existing.name, existing.image_id, True,
                          existing.mode, base_image=existing.base_image)
    if not (options.subnet_id and options.security_group_id) and not options.sandbox and not options.ssh_cidr:
        raise UsageError("the builder needs network access for SSH",
                         hint="configure stack outputs (FLEET_AWS_OUTPUTS), or pass --ssh-cidr YOUR.IP/32")

    lease_id = f"bake-{recipe.name[:20]}-{uuid.uuid4().hex[:8]}"
    from ..paths import subdir
    keys_dir = options.keys_dir or subdir("bakes") / lease_id
    builder: Builder | None = None
    temp_sg = None
    result = BakeResult(recipe.name, recipe.content_hash, recipe.image_name, "", False, options.mode)
    try:
        base, pinned = base_image(ec2, recipe)
        result.base_image = base["ImageId"]
        progress(f"base image {base['ImageId']} ({base.get('Name', '?')}, {base.get('CreationDate', '?')}): "
                 + ("pinned by [base.ami]" if pinned else "the newest match; pin it under [base.ami]"))
        sg = options.security_group_id
        if not sg and not options.sandbox:
            temp_sg = sg = temporary_security_group(ec2, lease_id, options.ssh_cidr)
        progress(f"launching builder {recipe.builder_instance_type} for {recipe.image_name}")
        builder, keys = launch(ec2, recipe, base, lease_id=lease_id, keys_dir=keys_dir,
                               max_s=options.max_s, subnet_id=options.subnet_id, security_group_id=sg,
                               stack=options.stack)
        builder.temp_security_group = temp_sg
        result.builder_instance_id = builder.instance_id
        machine = reach(ec2, builder, keys_dir, keys["host_pub"], sandbox=options.sandbox,
                        max_s=options.max_s, timeout_s=options.ready_timeout_s)
        from ..remote.ssh import wait_ready
        with wait_ready(machine, timeout=options.ready_timeout_s) as session:
            remote = _upload(session, machine.workdir, recipe)
            result.steps = _run_steps(session, recipe, remote, options, progress)
            result.verified = _verify(session, recipe, remote, options, progress)
            result.steps.append(finish.cleanup(session, remote, options.mode,
                                               sandbox=bool(options.sandbox), progress=progress))
            result.verified.append(finish.refuse_sudo(session, options.mode))
        progress(f"creating image {recipe.image_name}")
        result.image_id = _create_image(ec2, builder.instance_id, recipe, options.mode, result.base_image)
        _wait_available(ec2, result.image_id, options)
        progress(f"{recipe.image_name} is available: {result.image_id}")
        return result
    finally:
        if builder is not None:
            progress(f"terminating builder {builder.instance_id}")
            result.cleanup_problems = destroy(ec2, builder)
            for problem in result.cleanup_problems:
                progress(f"cleanup problem (the reaper will retry): {problem}")
        elif temp_sg:
            try:
                ec2.delete_security_group(GroupId=temp_sg)
            except Exception as exc:  # noqa: BLE001
                result.cleanup_problems.append(f"delete security group {temp_sg}: {exc}")
        if options.keys_dir is None:
            shutil.rmtree(keys_dir, ignore_errors=True)


def _upload(session, workdir: str, recipe: Recipe) -> str:
    """Copy the recipe's files (images/common/ under the recipe's own, exactly what the content hash
    covers) and the agent to <workdir>/fleet-bake/ on the builder."""
    import io

    from ..remote.agent import agent_source
    remote = f"{workdir.rstrip('/')}/{REMOTE_DIR}"
    session.run(["rm", "-rf", remote])
    session.run(["mkdir", "-p", remote])
    with session.transfer() as sftp:
        for rel, path in recipe.files().items():
            target = f"{remote}/recipe/{rel}"
            _mkdirs(sftp, target.rsplit("/", 1)[0])
            sftp.put(str(path), target)
            sftp.chmod(target, 0o755 if os.access(path, os.X_OK) else 0o644)
        sftp.putfo(io.BytesIO(agent_source().encode()), f"{remote}/agent.py")   # its modules embedded
    return remote


def _mkdirs(sftp, path: str) -> None:
    parts, current = path.strip("/").split("/"), ""
    for part in parts:
        current += "/" + part
        try:
            sftp.stat(current)
        except OSError:
            sftp.mkdir(current)


def _step_env(recipe: Recipe, remote: str, mode: str) -> dict[str, str]:
    return {**recipe.step_env(), "FLEET_BAKE_MODE": mode, "FLEET_AGENT_SRC": f"{remote}/agent.py"}


def _run_steps(session, recipe: Recipe, remote: str, options: BakeOptions, progress: Progress
               ) -> list[dict[str, Any]]:
    env = _step_env(recipe, remote, options.mode)
    done = []
    for i, step in enumerate(recipe.steps, 1):
        progress(f"step {i}/{len(recipe.steps)}: {step.name}")
        res = session.run(["bash", f"{remote}/recipe/{step.script}"], env=env, cwd=f"{remote}/recipe",
                          check=False, timeout=options.step_timeout_s)
        done.append({"step": step.name, "script": step.script, "exit_code": res.exit_code,
                     "output_tail": (res.stdout + res.stderr).strip().splitlines()[-5:]})
        if res.exit_code != 0:
            last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise InfrastructureError(f"recipe {recipe.name}: step {step.name!r} ({step.script}) exited "
                                      f"{res.exit_code}: {last[0][:200]}")
    return done


def _verify(session, recipe: Recipe, remote: str, options: BakeOptions, progress: Progress
            ) -> list[dict[str, Any]]:
    check = options.mode == "check"
    python = "python3" if check else recipe.verify_python
    agent = f"{remote}/agent.py" if check else recipe.verify_agent
    checks: list[tuple[str, str, str]] = [       # (what, command, how)
        ("python", f"{shlex.quote(python)} --version", "run"),
        ("agent", f"{shlex.quote(python)} {shlex.quote(agent)} --help", "run"),
    ]
    if recipe.gpu:
        has_gpu = session.run("test -e /dev/nvidia0 || test -e /proc/driver/nvidia/version",
                              check=False).exit_code == 0
        if has_gpu or not check:
            checks.append(("gpu", "nvidia-smi", "run"))
            if recipe.nvidia_driver:
                checks.append(("driver", DRIVER_QUERY,
                               "skipped: check mode installs no driver" if check else "run"))
        else:
            checks.append(("gpu", "nvidia-smi", "skipped: the sandbox builder has no GPU"))
    for cmd in recipe.verify:
        checks.append(("recipe", cmd, "syntax" if check else "run"))
    out = []
    env = _step_env(recipe, remote, options.mode)
    for what, cmd, how in checks:
        if how.startswith("skipped"):
            out.append({"check": what, "command": cmd, "result": how})
            continue
        line = cmd if how == "run" else f"bash -n -c {shlex.quote(cmd)}"
        res = session.run(line, env=env, cwd=f"{remote}/recipe", check=False, timeout=600)
        if res.exit_code != 0:
            last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise InfrastructureError(f"recipe {recipe.name}: verification `{cmd}` failed "
                                      f"(exit {res.exit_code}): {last[0][:200]}")
        if what == "driver":
            _same_driver(recipe, res.stdout)
        first = (res.stdout.strip() or res.stderr.strip()).splitlines()[:1]
        out.append({"check": what, "command": cmd,
                    "result": "ok" if how == "run" else "syntax ok (not run in check mode)",
                    "output": first[0][:120] if first else ""})
        progress(f"verified {what}: {cmd}")
    return out


def _same_driver(recipe: Recipe, query_output: str) -> None:
    """Every GPU's driver is the recipe's pin: a package that installed another version (a newer
    dependency, a repository that moved on) must not become the image the recipe's hash names."""
    found = sorted({line.strip() for line in query_output.splitlines() if line.strip()})
    if found != [recipe.nvidia_driver]:
        raise InfrastructureError(f"recipe {recipe.name}: the builder's NVIDIA driver is "
                                  f"{', '.join(found) or 'unknown'}, the recipe pins {recipe.nvidia_driver}: "
                                  "refusing to make an image of it")


def _create_image(ec2, instance_id: str, recipe: Recipe, mode: str, base: str) -> str:
    image_id = ec2.create_image(
        InstanceId=instance_id, Name=recipe.image_name,
        Description=f"fleet recipe {recipe.name} ({recipe.content_hash[:12]}): {recipe.description}"[:255],
    )["ImageId"]
    tags = [{"Key": HASH_TAG, "Value": recipe.content_hash}, {"Key": RECIPE_TAG, "Value": recipe.name},
            {"Key": MODE_TAG, "Value": mode}, {"Key": "Name", "Value": recipe.image_name},
            {"Key": BASE_TAG, "Value": base}, {"Key": "managed-by", "Value": "fleet"}]
    ec2.create_tags(Resources=[image_id], Tags=tags)
    return image_id


def _wait_available(ec2, image_id: str, options: BakeOptions) -> None:
    delay = 1 if options.sandbox else 15
    try:
        ec2.get_waiter("image_available").wait(
            ImageIds=[image_id], WaiterConfig={"Delay": delay,
                                               "MaxAttempts": max(2, int(options.image_wait_s // delay))})
    except Exception as exc:  # noqa: BLE001 — a waiter failure is one line for the user
        raise InfrastructureError(f"image {image_id} did not become available: {exc}") from None

