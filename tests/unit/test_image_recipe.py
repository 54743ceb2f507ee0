"""Image recipes: parsing with one-line errors, and the content hash that names the image."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fleet.errors import ConfigError, NotFound
from fleet.images.recipe import image_name, list_recipes, load_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path):
    shutil.copytree(REPO / "images", tmp_path / "images")
    return tmp_path / "images"


def test_shipped_recipes_load(root):
    assert list_recipes(root) == ["base-cpu", "pytorch-cuda"]
    gpu = load_recipe("pytorch-cuda", root)
    assert gpu.gpu and gpu.nvidia_driver == "550.127.05" and gpu.cuda == "12.4.1"
    assert [s.script for s in gpu.steps][0] == "scripts/10-system.sh"
    assert gpu.image_name == image_name("pytorch-cuda", gpu.content_hash)
    assert gpu.image_name == f"fleet-pytorch-cuda-{gpu.content_hash[:12]}"
    assert not load_recipe("base-cpu", root).gpu
    # the hash does not depend on where the checkout lives
    assert gpu.content_hash == load_recipe("pytorch-cuda", REPO / "images").content_hash


def test_hash_ignores_formatting_but_not_meaning(root):
    toml = root / "base-cpu" / "recipe.toml"
    before = load_recipe("base-cpu", root).content_hash
    toml.write_text("# a new comment\n\n" + toml.read_text())
    assert load_recipe("base-cpu", root).content_hash == before
    toml.write_text(toml.read_text().replace('version = "3.11"', 'version = "3.12"'))
    assert load_recipe("base-cpu", root).content_hash != before


def test_hash_covers_scripts_bytes_names_and_exec_bit(root):
    h0 = load_recipe("base-cpu", root).content_hash
    script = root / "common" / "scripts" / "30-python.sh"     # a shared script counts like its own
    script.write_text(script.read_text() + "\n")
    h1 = load_recipe("base-cpu", root).content_hash
    assert h1 != h0
    os.chmod(script, 0o644)
    h2 = load_recipe("base-cpu", root).content_hash
    assert h2 != h1
    (root / "base-cpu" / "helper.txt").write_text("x")
    assert load_recipe("base-cpu", root).content_hash != h2


@pytest.mark.parametrize("edit, key", [
    (lambda t: t.replace("[base]", "[bass]"), "base"),
    (lambda t: t.replace('script = "scripts/30-python.sh"', 'script = "../../etc/passwd"'), "steps[1].script"),
    (lambda t: t.replace('version = "3.11"', 'version = "latest"'), "python.version"),
    (lambda t: t.replace('disk_gb = 30', 'disk_gb = "big"'), "builder.disk_gb"),
    (lambda t: t + "\n[verify\n", None),
])
def test_bad_recipe_is_one_line_naming_file_and_key(root, edit, key):
    toml = root / "base-cpu" / "recipe.toml"
    toml.write_text(edit(toml.read_text()))
    with pytest.raises(ConfigError) as err:
        load_recipe("base-cpu", root)
    msg = str(err.value)
    assert "\n" not in msg and str(toml) in msg
    if key:
        assert f": {key}: " in msg


def test_unknown_recipe_lists_the_known_ones(root):
    with pytest.raises(NotFound, match="recipes: base-cpu, pytorch-cuda"):
        load_recipe("cuda13", root)
    with pytest.raises(ConfigError, match="lowercase"):
        load_recipe("../x", root)


def test_shipped_recipes_pin_what_they_install(root):
    """The same recipe must install the same bits on any day: exact pip, pinned pip packages."""
    for name in list_recipes(root):
        r = load_recipe(name, root)
        assert r.pip_version == "24.2" and r.step_env()["FLEET_PIP_VERSION"] == "24.2"
        assert all("==" in p for p in r.pip_packages)
        assert r.base.ami == {}           # not pinned: the bake says which base it took


@pytest.mark.parametrize("edit, key, says", [
    (lambda t: t.replace('pip = ["numpy==1.26.4"]', 'pip = ["numpy"]'), "packages.pip", "not pinned"),
    (lambda t: t.replace('pip = ["numpy==1.26.4"]', 'pip = ["numpy>=1.26"]'), "packages.pip", "not pinned"),
    (lambda t: t.replace('pip = "24.2"', 'pip = "latest"'), "python.pip", "not a version"),
    (lambda t: t.replace("[builder]", '[base.ami]\nus-east-1 = "ubuntu-latest"\n\n[builder]'),
     "base.ami.us-east-1", "not an image id"),
    (lambda t: t.replace("[builder]", '[base.ami]\nmoon = "ami-0123456789abcdef0"\n\n[builder]'),
     "base.ami.moon", "not an AWS region"),
    (lambda t: t + '\n[nvidia]\ndriver = "550.127.05"\nkeyring_sha256 = "abc"\n', "nvidia.keyring_sha256",
     "64 lowercase hex"),
])
def test_pins_are_checked_when_the_recipe_loads(root, edit, key, says):
    toml = root / "base-cpu" / "recipe.toml"
    toml.write_text(edit(toml.read_text()))
    with pytest.raises(ConfigError, match=f": {key}: .*{says}"):
        load_recipe("base-cpu", root)


def test_pinned_base_images_and_keyring_reach_the_recipe(root):
    toml = root / "pytorch-cuda" / "recipe.toml"
    sha = "ab" * 32
    toml.write_text(toml.read_text().replace("[builder]", '[base.ami]\nus-east-1 = "ami-0123456789abcdef0"\n'
                                             'eu-west-1 = "ami-0fedcba9876543210"\n\n[builder]')
                    .replace('cuda = "12.4.1"', f'cuda = "12.4.1"\nkeyring_sha256 = "{sha}"'))
    r = load_recipe("pytorch-cuda", root)
    assert r.base.ami == {"us-east-1": "ami-0123456789abcdef0", "eu-west-1": "ami-0fedcba9876543210"}
    assert r.step_env()["FLEET_NVIDIA_KEYRING_SHA256"] == sha


def test_common_scripts_lie_under_every_recipe(root):
    """images/common/ is part of every recipe: a shared change renames every image, a recipe's own file
    of the same path wins, and where a file comes from does not matter to the hash."""
    before = {n: load_recipe(n, root).content_hash for n in list_recipes(root)}
    assert list_recipes(root) == ["base-cpu", "pytorch-cuda"]          # common/ is not a recipe
    gpu = load_recipe("pytorch-cuda", root)
    assert gpu.files()["scripts/lib.sh"] == root / "common" / "scripts" / "lib.sh"
    assert gpu.files()["scripts/20-nvidia.sh"] == root / "pytorch-cuda" / "scripts" / "20-nvidia.sh"
    assert "scripts/20-nvidia.sh" not in load_recipe("base-cpu", root).files()

    # a copy of a shared file inside the recipe: same tree, same hash
    shutil.copytree(root / "common" / "scripts", root / "base-cpu" / "scripts")
    assert load_recipe("base-cpu", root).content_hash == before["base-cpu"]
    # the recipe's own file wins over the shared one
    own = root / "base-cpu" / "scripts" / "lib.sh"
    own.write_text(own.read_text() + "# base-cpu only\n")
    cpu = load_recipe("base-cpu", root)
    assert cpu.files()["scripts/lib.sh"] == own and cpu.content_hash != before["base-cpu"]
    assert load_recipe("pytorch-cuda", root).content_hash == before["pytorch-cuda"]
    # a shared change reaches every recipe that does not override it
    shared = root / "common" / "scripts" / "10-system.sh"
    shared.write_text(shared.read_text() + "\n")
    assert load_recipe("pytorch-cuda", root).content_hash != before["pytorch-cuda"]


def test_step_script_may_come_from_common_but_not_outside(root):
    toml = root / "pytorch-cuda" / "recipe.toml"
    toml.write_text(toml.read_text().replace('script = "scripts/20-nvidia.sh"', 'script = "scripts/nope.sh"'))
    with pytest.raises(ConfigError, match=r"steps\[1\]\.script"):
        load_recipe("pytorch-cuda", root)
    assert [s.script for s in load_recipe("base-cpu", root).steps] == [
        "scripts/10-system.sh", "scripts/30-python.sh", "scripts/40-agent.sh", "scripts/90-cleanup.sh"]


def test_the_aws_sandbox_serves_a_base_image_for_every_shipped_recipe(tmp_path):
    """scripts/aws_sandbox.py hands moto these images (MOTO_AMIS_PATH): each shipped recipe's [base]
    filter (name pattern, owner, architecture) matches one, so `fleet image bake` finds its base there."""
    import fnmatch
    import json
    pytest.importorskip("moto")
    from fleet.providers.aws.sandbox import recipe_base_images, write_moto_amis
    root = Path(__file__).resolve().parents[2] / "images"
    stand_ins = recipe_base_images(root)
    for name in list_recipes(root):
        base = load_recipe(name, root).base
        assert [i for i in stand_ins if fnmatch.fnmatchcase(i["name"], base.name) and i["owner_id"] in base.owners
                and i["architecture"] == base.architecture], name
    served = json.loads(write_moto_amis(tmp_path / "amis.json", root).read_text())
    assert {i["ami_id"] for i in stand_ins} <= {i["ami_id"] for i in served}
    assert any(i.get("owner_id") == "801119661308" for i in served)     # moto's own catalogue stays
