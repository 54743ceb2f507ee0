"""Asking for a GPU type (`--gpus A100:8`, `gpus = "L4:4"`), choosing the mix for it on each
provider's templates, and the plan (Quote) a user sees before anything is leased."""
from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.config.loader import load_config
from fleet.config.model import BudgetsConfig, Config
from fleet.errors import Cancelled, ConfigError, UsageError
from fleet.gpus import GpuRequest, GpuRequestError, GpuType, parse_gpu_request
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.providers.local.provider import LocalProvider
from fleet.providers.slurm.commands import AllocationRequest, _allocation_flags
from fleet.run.offer import Quote, candidate_mixes, choose_offer, quote


@pytest.mark.parametrize("text, expected", [
    (8, GpuRequest(8)),
    ("8", GpuRequest(8)),
    ("A100:8", GpuRequest(8, GpuType("A100"))),
    ("a100-80GB:8", GpuRequest(8, GpuType("A100", 80))),
    (" L4 : 4 ", GpuRequest(4, GpuType("L4"))),
    ("H100", GpuRequest(None, GpuType("H100"))),
    ("RTX 6000:2", GpuRequest(2, GpuType("RTX 6000"))),
])
def test_gpu_requests_parse(text, expected):
    assert parse_gpu_request(text, max_count=1024) == expected


@pytest.mark.parametrize("text, message", [
    ("8:A100", "the count after ':' must be a whole number"),
    ("A100:0", "must be a positive integer, got 0"),
    ("A100:-2", "must be a positive integer, got -2"),
    ("A100:99999", "at most 1024 GPUs"),
    ("nvidia", "is not a GPU count or type"),
    ("many", "is not a GPU count or type; write a count like 8, or a model like A100"),
    ("A100-80TB:8", "is not a GPU count or type"),
    (True, "got true"),
    ("", "must be a positive integer or TYPE:COUNT"),
])
def test_bad_gpu_requests_say_what_to_write(text, message):
    with pytest.raises(GpuRequestError, match=message.replace("(", r"\(")):
        parse_gpu_request(text, max_count=1024)


@pytest.mark.parametrize("asked, description, memory_mib, ok", [
    ("A100", "A100", None, True),                           # AWS GpuInfo
    ("A100", "NVIDIA A100-SXM4-80GB", None, True),          # nvidia-smi on a host
    ("A100-80GB", "NVIDIA A100-SXM4-80GB", None, True),
    ("A100-40GB", "NVIDIA A100-SXM4-80GB", None, False),
    ("A100-80GB", "A100", 81920, True),                     # memory from the catalogue
    ("A100-80GB", "A100", 40960, False),
    ("A10", "A100", None, False),                           # whole tokens: A10 is not A100
    ("A10G", "A10G", None, True),
    ("H100", "NVIDIA H100 80GB HBM3", None, True),
    ("L4", "L40S", None, False),
    ("a100", "gres/gpu", None, False),
])
def test_a_type_matches_provider_names_by_whole_tokens(asked, description, memory_mib, ok):
    from fleet.gpus import parse_gpu_type
    assert parse_gpu_type(asked).matches(description, memory_mib) is ok


def test_fleet_toml_takes_type_and_count_and_the_cli_overrides_both(tmp_path):
    (tmp_path / "fleet.toml").write_text('command = "x"\ngpus = "L4:4"\n')
    cfg = load_config(cwd=tmp_path)
    assert (cfg.gpus, cfg.gpu_type) == (4, GpuType("L4"))
    cfg = load_config(cwd=tmp_path, overrides={"gpus": "A100-80GB:8"})
    assert (cfg.gpus, cfg.gpu_type) == (8, GpuType("A100", 80))
    cfg = load_config(cwd=tmp_path, overrides={"gpus": "16"})
    assert (cfg.gpus, cfg.gpu_type) == (16, None)
    (tmp_path / "fleet.toml").write_text('command = "x"\ngpus = "L4:four"\n')
    with pytest.raises(ConfigError, match=r"fleet.toml:2: gpus: 'L4:four': the count after ':'"):
        load_config(cwd=tmp_path)


def _config(tmp_path: Path, **changes) -> Config:
    base = Config(path=None, base_dir=tmp_path, project="p", name="p", command="ok", provider="local",
                  max_duration_s=2 * 3600, heartbeat_ttl_s=60)
    return replace(base, **changes)


def test_local_templates_declare_a_simulated_a10g_and_the_default_is_local_4gpu(tmp_path):
    provider = LocalProvider()
    offer = choose_offer(provider, _config(tmp_path, gpus=8))
    assert (offer.template.name, offer.machine_count, offer.template.gpu_model) == ("local-4gpu", 2, "A10G")
    # With a type and no template: the cheapest template that has it.
    mixes = candidate_mixes(provider, _config(tmp_path, gpus=8, gpu_type=GpuType("A10G", 24)))
    assert mixes[0].price_per_hour == min(m.price_per_hour for m in mixes)
    assert {m.template for m in mixes} == {"local-1gpu", "local-4gpu", "local-8gpu"}
    # A named template is honoured, its type checked.
    offer = choose_offer(provider, _config(tmp_path, gpus=8, gpu_type=GpuType("A10G"), template="local-8gpu"))
    assert (offer.template.name, offer.machine_count, str(offer.gpu_type)) == ("local-8gpu", 1, "A10G")


def test_nothing_matches_is_one_line_listing_what_exists(tmp_path):
    provider = LocalProvider()
    with pytest.raises(UsageError) as err:
        choose_offer(provider, _config(tmp_path, gpus=8, gpu_type=GpuType("A100")))
    line = err.value.one_line()
    assert "\n" not in line
    assert "no machine of the local provider has 8 × A100 GPUs" in line
    assert "it has: A10G 24GB (local-1gpu, local-4gpu, local-8gpu)" in line
    with pytest.raises(UsageError, match="template 'local-8gpu' has A10G-80GB GPUs"):
        choose_offer(provider, _config(tmp_path, gpu_type=GpuType("A10G", 80), template="local-8gpu"))


def test_quote_says_the_most_a_run_can_cost(tmp_path):
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal("2.50")))
    q = quote(_config(tmp_path, provider="fake", template="fake-4gpu", gpus=8), provider)
    assert (q.machines, q.gpus, q.instance_type, q.lifecycle) == (2, 8, "fake-4gpu", "on-demand")
    assert q.price_per_hour == Decimal("5.00") and q.max_cost == Decimal("10.00")   # 2 h × $5/h
    assert q.most_cost == Decimal("10.00") and not q.shadow
    q = quote(_config(tmp_path, provider="fake", template="fake-4gpu", gpus=8, budget=Decimal("3")), provider)
    assert q.most_cost == Decimal("3") and q.to_json()["most_cost_usd"] == "3"
    assert json.loads(json.dumps(q.to_json()))["max_cost_usd"] == "10.000000"


def test_a_declined_plan_leases_nothing(tmp_path, fleet_home):
    from fleet.run.lease import NewLease
    from fleet.run.pipeline import Pipeline
    from fleet.run.types import RunOptions
    from fleet.state import open_state
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    seen: list[Quote] = []

    def decline(q: Quote) -> bool:
        seen.append(q)
        return False

    config = _config(tmp_path, provider="fake", template="fake-4gpu", gpus=8, budgets=BudgetsConfig(grace_s=0))
    with pytest.raises(Cancelled, match="declined; nothing was leased"):
        Pipeline(config, NewLease(provider), options=RunOptions(confirm=decline)).run()
    assert [q.machines for q in seen] == [2]
    state = open_state()
    try:
        assert state.list_leases(active_only=False) == [] and state.list_runs() == []
    finally:
        state.close()


def test_slurm_asks_for_the_gres_type():
    req = AllocationRequest(name="j", nodes=2, gpus_per_node=4, time_limit_s=600, gpu_type="a100")
    assert "--gres=gpu:a100:4" in _allocation_flags(req)
    assert "--gpus-per-node=a100:4" in _allocation_flags(replace(req, gpus_flag="gpus-per-node"))
    assert "--gres=gpu:4" in _allocation_flags(replace(req, gpu_type=None))


def test_fleet_offers_takes_a_gpu_type(tmp_path):
    from tests.conftest import run_fleet
    listed = run_fleet(["offers", "-p", "local", "--gpus", "A10G:8", "--json"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    offers = json.loads(listed.stdout)["offers"]
    assert {o["gpu_model"] for o in offers} == {"A10G"} and offers[0]["machines"] == 8
    missing = run_fleet(["offers", "-p", "local", "--gpus", "A100:8"], cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "no local template has 8 × A100 GPUs; it has: A10G 24GB" in missing.stderr


def test_one_gpu_is_never_one_gpus(tmp_path):
    """Issue 17: "1 GPUs" in titles and messages."""
    from tests.conftest import run_fleet
    from fleet.gpus import gpus_text
    assert (gpus_text(1), gpus_text(8)) == ("1 GPU", "8 GPUs")
    listed = run_fleet(["offers", "-p", "local", "--gpus", "1"], cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith("1 GPU on local, cheapest first\n"), listed.stdout
    assert "1 GPUs" not in listed.stdout + listed.stderr


def test_each_provider_plans_with_its_own_default_template_not_local_4gpu(tmp_path, fleet_home):
    """Issue 17: `--provider aws` / `ssh` kept local-4gpu (AWS: tests/e2e/test_aws_sandbox.py)."""
    from tests.conftest import run_fleet
    (tmp_path / "fleet.toml").write_text('command = "true"\n[[hosts]]\naddress = "127.0.0.1"\nport = 9\ngpus = 4\n')
    for provider, template in (("ssh", "hosts"), ("slurm", "slurm-1gpu"), ("local", "local-4gpu")):
        planned = run_fleet(["up", "--provider", provider, "--gpus", "4", "--dry-run", "--json"], cwd=tmp_path)
        assert planned.returncode == 0, planned.stderr
        assert json.loads(planned.stdout)["plan"]["template"] == template


def test_the_run_record_keeps_the_gpu_type_for_a_rerun(tmp_path):
    from fleet.run.record import config_for_record
    assert config_for_record(_config(tmp_path, gpus=8, gpu_type=GpuType("A100", 80)))["gpu_type"] == "A100-80GB"
    assert "gpu_type" not in config_for_record(_config(tmp_path, gpus=8))   # old records' hash unchanged


def test_a_count_the_default_template_cannot_give_falls_back_to_a_template_that_can(tmp_path):
    provider = LocalProvider()
    offer = choose_offer(provider, _config(tmp_path, gpus=3))        # local-4gpu cannot give 3
    assert (offer.template.name, offer.machine_count) == ("local-1gpu", 3)
    with pytest.raises(UsageError, match="not a multiple of 4"):     # a named template is never swapped
        choose_offer(provider, _config(tmp_path, gpus=3, template="local-4gpu"))


def test_the_plan_calls_slurms_price_a_shadow_price_and_local_machines_simulated(tmp_path):
    """Slurm's machines are real; only their price is an internal one ([slurm] price_per_gpu_hour):
    the plan says "shadow price", never "simulated", which is for local and sandbox machines."""
    from fleet.cli.plan_view import plan_lines
    from fleet.providers.slurm.provider import SlurmProvider
    from fleet.providers.slurm.settings import SlurmSettings
    slurm = quote(_config(tmp_path, provider="slurm", template="slurm-4gpu", gpus=4),
                  SlurmProvider(SlurmSettings(price_per_gpu_hour=Decimal("2.5"))))
    assert slurm.shadow and not slurm.simulated
    assert (slurm.to_json()["simulated"], slurm.to_json()["shadow_price"]) == (False, True)
    most = next(line for line in plan_lines(slurm) if line.startswith("at most"))
    assert most == "at most    $20.00 = 2h max_duration × $10.00/h (shadow price: nothing is billed)"
    assert "simulated" not in "\n".join(plan_lines(slurm))
    local = quote(_config(tmp_path, gpus=4), LocalProvider())
    assert local.shadow and local.simulated and local.to_json()["simulated"] is True
    assert next(line for line in plan_lines(local) if line.startswith("at most")).endswith(
        "(simulated: nothing is billed)")
    billed = quote(_config(tmp_path, provider="fake", template="fake-4gpu", gpus=4),
                   FakeProvider(FakeSettings(price_per_hour=Decimal("2.50"))))
    assert not billed.shadow and "nothing is billed" not in "\n".join(plan_lines(billed))


@pytest.mark.parametrize("text", ["²", "A100:²", "①", "L4:③"])
def test_a_count_in_non_ascii_digits_is_refused_in_one_line(text, tmp_path, fleet_home):
    """str.isdigit() takes "²" and "①", which int() then refused: `fleet up --gpus ²` (and `gpus = "²"`
    in fleet.toml) was `internal error: ValueError`."""
    from tests.conftest import run_fleet
    with pytest.raises(GpuRequestError):
        parse_gpu_request(text, max_count=64)
    proc = run_fleet(["up", "--dry-run", "--gpus", text, "-p", "local", "--", "true"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error: --gpus:") and "internal" not in lines[0]


def test_the_plan_says_where_a_fleet_toml_sends_what_is_the_users(tmp_path, fleet_home, monkeypatch):
    """A red-team round: a cloned repository's fleet.toml could pass the user's AWS keys to every
    machine (`secrets`), upload the code and data to a store of its choosing and write the records
    to its own database, and neither the plan asked on a terminal nor --dry-run said so."""
    from fleet.cli.plan_view import plan_lines
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    config = _config(tmp_path, gpus=1, secrets=["AWS_SECRET_ACCESS_KEY"], store=str(tmp_path / "theirs"),
                     state_url="postgresql://bob:hunter2@db.example/x")
    q = quote(config, LocalProvider())
    lines = plan_lines(q)
    assert "secrets    AWS_SECRET_ACCESS_KEY: from your environment to every machine" in lines
    assert f"store      {tmp_path / 'theirs'}: the code and [data] are uploaded there" in lines
    assert "state      postgresql://bob:***@db.example/x: the run's records and costs are written there" in lines
    assert (q.to_json()["secrets"], q.to_json()["state"]) == (["AWS_SECRET_ACCESS_KEY"], "postgresql://bob:***@db.example/x")
    plain = plan_lines(quote(_config(tmp_path, gpus=1), LocalProvider()))
    assert not any(line.startswith(("secrets", "store", "state")) for line in plain)


def test_the_plan_names_the_stack_outputs_a_fleet_toml_points_aws_at(tmp_path, fleet_home, monkeypatch):
    """A cloned repository's `[aws] outputs` picks the network, image and bucket of the user's
    machines; the plan said only the region. FLEET_AWS_OUTPUTS, which wins, is not the file's say."""
    from fleet.cli.plan_view import plan_lines
    (tmp_path / "fleet.toml").write_text('command = "true"\nprovider = "aws"\ntemplate = "local-1gpu"\n'
                                         '[aws]\noutputs = "their-stack.json"\n')
    monkeypatch.delenv("FLEET_AWS_OUTPUTS", raising=False)
    config = load_config(cwd=tmp_path)
    q = Quote.of(choose_offer(LocalProvider(), config), config)
    assert "stack      their-stack.json ([aws] outputs): the network, image and bucket the machines use" \
        in plan_lines(q)
    monkeypatch.setenv("FLEET_AWS_OUTPUTS", str(tmp_path / "mine.json"))
    q = Quote.of(choose_offer(LocalProvider(), config), config)
    assert not any(line.startswith("stack") for line in plan_lines(q)) and q.to_json()["stack"] is None


def test_the_plan_shows_no_password_of_the_store_or_the_state(tmp_path, fleet_home, monkeypatch):
    """The plan (on a terminal, in --dry-run, in a CI log) named the store with its token in it
    (`https://u:TOKEN@minio…`) and a state URL whose password is libpq's `?password=` in the clear."""
    from fleet.cli.plan_view import plan_lines
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    config = _config(tmp_path, gpus=1, store="https://u:TOKEN123@minio.example/bucket",
                     state_url="postgresql://bob@db.example/x?sslmode=require&password=hunter2")
    shown = "\n".join(plan_lines(quote(config, LocalProvider())))
    assert "store      https://u:***@minio.example/bucket: the code and [data] are uploaded there" in shown
    assert "state      postgresql://bob@db.example/x?sslmode=require&password=***: the run's records" in shown
    assert "TOKEN123" not in shown and "hunter2" not in shown
