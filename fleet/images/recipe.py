"""Image recipes: `images/<recipe>/recipe.toml` plus the scripts it runs, and the content hash that
names the baked image.

The hash is what makes an image reproducible and findable: the stack resolves a launch template's
image by the tag ``fleet:recipe-hash``, and `fleet image bake` skips the work when an image with that
tag already exists. It covers the recipe's *meaning*, not its formatting: recipe.toml is parsed and
re-serialised canonically (comments and key order do not matter), every other file of the recipe
counts byte for byte together with its relative path and executable bit.

A recipe's files are `images/common/` overlaid by `images/<recipe>/` (a recipe's own file wins over
a shared one at the same relative path). Steps shared by every recipe (lib.sh, system packages, the
Python venv, the agent, the cleanup) live once in common/; the bake uploads, and the hash covers,
exactly that merged tree, so a change to a shared script renames every image that uses it.

Stdlib only: the Pulumi program imports this to compute the hash it looks images up by.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NotFound

RECIPE_FILE = "recipe.toml"
COMMON_DIR = "common"                # images/common/: files every recipe gets (see recipe_files)
HASH_TAG = "fleet:recipe-hash"
RECIPE_TAG = "fleet:recipe"
NAME_HASH_CHARS = 12                 # image names carry a prefix; the tag carries the full hash
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}\Z")
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+)*\Z")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+\Z")
_AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}\Z")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
# an exact pin: what a bake installs must not depend on the day it runs
_PIP_PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!-]+\Z")
_SKIP = {"__pycache__", ".DS_Store"}


def images_root() -> Path:
    """The recipes (override: $FLEET_IMAGES_DIR): `images/` at the top of the repository, which the
    package reaches as fleet/images/recipes (a symlink in a checkout, a copy in the wheel)."""
    env = os.environ.get("FLEET_IMAGES_DIR")
    if env:
        return Path(env).expanduser()
    shipped = Path(__file__).resolve().parent / "recipes"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[2] / "images"   # a checkout made without symlinks


@dataclass(frozen=True)
class BaseImage:
    """Which public image the builder starts from: the one `ami` pins for the bake's region, else the
    newest one matching `name` from `owners` (the bake then says which it took)."""

    name: str
    owners: tuple[str, ...]
    architecture: str = "x86_64"
    user: str = "ubuntu"             # the SSH login of the base image
    ami: dict[str, str] = field(default_factory=dict, hash=False)   # region -> pinned image id


@dataclass(frozen=True)
class Step:
    name: str
    script: str                      # path relative to the recipe directory


@dataclass(frozen=True)
class Recipe:
    name: str
    directory: Path
    description: str
    base: BaseImage
    builder_instance_type: str
    builder_disk_gb: int
    gpu: bool                        # verify with nvidia-smi (only where the builder has a GPU)
    nvidia_driver: str | None
    cuda: str | None
    python: str
    apt_packages: tuple[str, ...]
    pip_packages: tuple[str, ...]
    steps: tuple[Step, ...]
    verify: tuple[str, ...]          # commands that must succeed on the builder before imaging
    content_hash: str
    verify_python: str = "/opt/fleet/venv/bin/python"   # the interpreter the image provides
    verify_agent: str = "/opt/fleet/agent.py"           # where the image has the fleet agent
    pip_version: str = ""            # the venv's pip; empty: the one the venv comes with
    nvidia_keyring_sha256: str = ""  # of NVIDIA's cuda-keyring .deb, checked before it is installed
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def image_name(self) -> str:
        return image_name(self.name, self.content_hash)

    def files(self) -> dict[str, Path]:
        """Relative path → file: what the bake uploads and the hash covers (common/ under the recipe)."""
        return recipe_files(self.directory)

    def step_env(self) -> dict[str, str]:
        """What every step script is given: the recipe's versions and packages, nothing else."""
        return {
            "FLEET_RECIPE": self.name,
            "FLEET_RECIPE_HASH": self.content_hash,
            "FLEET_NVIDIA_DRIVER": self.nvidia_driver or "",
            "FLEET_CUDA_VERSION": self.cuda or "",
            "FLEET_PYTHON_VERSION": self.python,
            "FLEET_PIP_VERSION": self.pip_version,
            "FLEET_NVIDIA_KEYRING_SHA256": self.nvidia_keyring_sha256,
            "FLEET_APT_PACKAGES": " ".join(self.apt_packages),
            "FLEET_PIP_PACKAGES": " ".join(self.pip_packages),
        }


def image_name(recipe: str, content_hash: str) -> str:
    return f"fleet-{recipe}-{content_hash[:NAME_HASH_CHARS]}"


def _files(directory: Path) -> list[Path]:
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part in _SKIP or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            out.append(path)
    return out


def recipe_files(directory: Path) -> dict[str, Path]:
    """A recipe's files by relative POSIX path, sorted: the images root's common/ directory overlaid by
    the recipe directory itself (recipe.toml included)."""
    merged: dict[str, Path] = {}
    for source in (directory.parent / COMMON_DIR, directory):
        if source.is_dir():
            merged.update((p.relative_to(source).as_posix(), p) for p in _files(source))
    return dict(sorted(merged.items(), key=lambda item: item[0].split("/")))   # as Path order


def content_hash(directory: Path, parsed: dict[str, Any]) -> str:
    """sha256 over the canonical recipe and every other file (relative path, exec bit, bytes)."""
    h = hashlib.sha256()
    h.update(b"fleet-recipe-v1\0")
    canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    h.update(canonical.encode() + b"\0")
    for rel, path in recipe_files(directory).items():
        if rel == RECIPE_FILE:
            continue
        data = path.read_bytes()
        exec_bit = b"x" if os.access(path, os.X_OK) else b"-"
        h.update(rel.encode() + b"\0" + exec_bit + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def _need(table: dict, key: str, kind: type, where: str, path: Path, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError("missing", path=str(path), key=f"{where}{key}")
        return default
    value = table[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"expected {kind.__name__}, got {type(value).__name__}",
                          path=str(path), key=f"{where}{key}")
    return value


def _str_list(table: dict, key: str, where: str, path: Path) -> tuple[str, ...]:
    value = _need(table, key, list, where, path, [])
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError("must be a list of non-empty strings", path=str(path), key=f"{where}{key}")
    return tuple(value)


def load_recipe(name: str, root: Path | None = None) -> Recipe:
    """Parse and check `images/<name>/recipe.toml`; every problem is one line naming file and key."""
    root = images_root() if root is None else Path(root)
    if not _NAME_RE.match(name or ""):
        raise ConfigError(f"recipe name {name!r} must be lowercase letters, digits and dashes")
    directory = root / name
    path = directory / RECIPE_FILE
    if not path.is_file():
        known = ", ".join(list_recipes(root)) or "none"
        raise NotFound(f"no recipe {name!r} ({path} does not exist)", hint=f"recipes: {known}")
    try:
        raw = tomllib.loads(path.read_text())
    except (ValueError, RecursionError) as exc:   # ValueError: TOMLDecodeError, or an integer over 4300 digits
        raise ConfigError(f"not valid TOML: {exc or 'nested too deeply'}", path=str(path)) from None

    base_t = _need(raw, "base", dict, "", path)
    base = BaseImage(name=_need(base_t, "name", str, "base.", path),
                     owners=_str_list(base_t, "owners", "base.", path) or ("amazon",),
                     architecture=_need(base_t, "architecture", str, "base.", path, "x86_64"),
                     user=_need(base_t, "user", str, "base.", path, "ubuntu"),
                     ami=_base_amis(base_t, path))
    builder = _need(raw, "builder", dict, "", path, {})
    nvidia = _need(raw, "nvidia", dict, "", path, {})
    python = _need(raw, "python", dict, "", path, {})
    packages = _need(raw, "packages", dict, "", path, {})
    for key, table in (("nvidia.driver", nvidia.get("driver")), ("nvidia.cuda", nvidia.get("cuda")),
                       ("python.version", python.get("version", "3"))):
        if table is not None and not (isinstance(table, str) and _VERSION_RE.match(table)):
            raise ConfigError(f"{table!r} is not a version like 12.4.1", path=str(path), key=key)
    pip_version = _need(python, "pip", str, "python.", path, "")
    if pip_version and not _VERSION_RE.match(pip_version):
        raise ConfigError(f"{pip_version!r} is not a version like 24.2", path=str(path), key="python.pip")
    keyring_sha = _need(nvidia, "keyring_sha256", str, "nvidia.", path, "")
    if keyring_sha and not _SHA256_RE.match(keyring_sha):
        raise ConfigError("must be 64 lowercase hex digits (sha256sum's output)", path=str(path),
                          key="nvidia.keyring_sha256")
    pip_packages = _str_list(packages, "pip", "packages.", path)
    for pkg in pip_packages:
        if not _PIP_PIN_RE.match(pkg):
            raise ConfigError(f"{pkg!r} is not pinned: write it as name==version", path=str(path),
                              key="packages.pip")

    steps = []
    files = recipe_files(directory)
    for i, st in enumerate(_need(raw, "steps", list, "", path, [])):
        if not isinstance(st, dict):
            raise ConfigError("each [[steps]] must be a table", path=str(path), key=f"steps[{i}]")
        script = _need(st, "script", str, f"steps[{i}].", path)
        if Path(script).as_posix() not in files:
            raise ConfigError(f"script {script!r} is not a file of this recipe ({directory} or "
                              f"{directory.parent / COMMON_DIR})", path=str(path), key=f"steps[{i}].script")
        steps.append(Step(name=_need(st, "name", str, f"steps[{i}].", path, Path(script).stem),
                          script=script))
    if not steps:
        raise ConfigError("a recipe needs at least one [[steps]] entry", path=str(path), key="steps")

    gpu = _need(builder, "gpu", bool, "builder.", path, bool(nvidia))
    verify_t = _need(raw, "verify", dict, "", path, {})
    verify = _str_list(verify_t, "commands", "verify.", path)
    disk = _need(builder, "disk_gb", int, "builder.", path, 60)
    if disk < 8:
        raise ConfigError(f"must be at least 8, got {disk}", path=str(path), key="builder.disk_gb")
    return Recipe(
        name=name, directory=directory,
        description=_need(raw, "description", str, "", path, ""),
        base=base,
        builder_instance_type=_need(builder, "instance_type", str, "builder.", path,
                                    "g5.xlarge" if gpu else "m6i.large"),
        builder_disk_gb=disk, gpu=gpu,
        nvidia_driver=nvidia.get("driver"), cuda=nvidia.get("cuda"),
        python=python.get("version", "3"),
        apt_packages=_str_list(packages, "apt", "packages.", path),
        pip_packages=pip_packages, pip_version=pip_version, nvidia_keyring_sha256=keyring_sha,
        steps=tuple(steps), verify=verify,
        content_hash=content_hash(directory, raw), raw=raw,
        verify_python=_need(verify_t, "python", str, "verify.", path, "/opt/fleet/venv/bin/python"),
        verify_agent=_need(verify_t, "agent", str, "verify.", path, "/opt/fleet/agent.py"),
    )


def _base_amis(base_t: dict, path: Path) -> dict[str, str]:
    """`[base.ami]`: region = "ami-…", the exact base image per region."""
    amis = _need(base_t, "ami", dict, "base.", path, {})
    for region, ami in amis.items():
        if not _REGION_RE.match(region):
            raise ConfigError(f"{region!r} is not an AWS region like us-east-1", path=str(path),
                              key=f"base.ami.{region}")
        if not (isinstance(ami, str) and _AMI_RE.match(ami)):
            raise ConfigError(f"{ami!r} is not an image id like ami-0123456789abcdef0", path=str(path),
                              key=f"base.ami.{region}")
    return dict(amis)


def list_recipes(root: Path | None = None) -> list[str]:
    root = images_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / RECIPE_FILE).is_file())
