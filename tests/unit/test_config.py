"""fleet.toml loading: happy path, every kind of error as one file:line:key line, overrides."""
from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.config.loader import load_config, parse_duration, parse_money
from fleet.errors import ConfigError, ExitCode, UsageError
from fleet.providers import registry


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLEET_HEARTBEAT_TTL", raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error_of(tmp_path: Path, text: str, **kwargs) -> str:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.USAGE
    return message


FULL = """
    project = "vision"
    name = "resnet-sweep"
    command = "python train.py --lr 0.1"
    setup = "pip install -r requirements.txt"
    gpus = 8
    template = "local-1gpu"
    provider = "local"
    per_gpu = true
    outputs = "out/models"
    max_duration = "1h30m"
    python = "python3.11"
    user = "alice"
    budget = "12.50"
    store = "s3://bucket/fleet"
    state_url = "postgresql://fleet@db/fleet"
    secrets = ["HF_TOKEN", "WANDB_API_KEY"]

    [lease]
    heartbeat_ttl = 45

    [env]
    OMP_NUM_THREADS = "1"

    [budgets]
    project_monthly = 500
    user_monthly = 99.5
    warn_at = 0.9
    grace = "2m"
    idle_gpu_percent = 5
    idle_minutes = 20

    [data]
    digits = "data/digits"

    [prices]
    "local-1gpu" = 0
    "p4d.24xlarge" = "32.77"

    [aws]
    outputs = "outputs.json"
    connect = "private"

    [[hosts]]
    address = "gpu1.lab"
    user = "ubuntu"
    port = 2222
    key = "~/.ssh/lab"
    gpus = 4
    name = "gpu1"

    [[hosts]]
    address = "10.0.0.7"
"""


def test_every_key_is_loaded_into_config(tmp_path):
    write(tmp_path, FULL)
    cfg = load_config(cwd=tmp_path)
    assert cfg.path == tmp_path / "fleet.toml" and cfg.base_dir == tmp_path
    assert (cfg.project, cfg.name, cfg.command) == ("vision", "resnet-sweep", "python train.py --lr 0.1")
    assert cfg.setup == "pip install -r requirements.txt"
    assert (cfg.gpus, cfg.template, cfg.provider, cfg.per_gpu) == (8, "local-1gpu", "local", True)
    assert cfg.outputs == "out/models" and cfg.max_duration_s == 5400 and cfg.heartbeat_ttl_s == 45
    assert (cfg.python, cfg.user) == ("python3.11", "alice")
    assert cfg.budget == Decimal("12.50") and isinstance(cfg.budget, Decimal)
    assert cfg.store == "s3://bucket/fleet" and cfg.state_url.startswith("postgresql://")
    assert cfg.secrets == ["HF_TOKEN", "WANDB_API_KEY"]
    assert cfg.env == {"OMP_NUM_THREADS": "1"}
    b = cfg.budgets
    assert (b.project_monthly, b.user_monthly, b.warn_fraction) == (Decimal(500), Decimal("99.5"), Decimal("0.9"))
    assert (b.grace_s, b.idle_gpu_percent, b.idle_minutes) == (120, 5.0, 20.0)
    assert cfg.data == {"digits": "data/digits"}
    assert cfg.prices == {"local-1gpu": Decimal(0), "p4d.24xlarge": Decimal("32.77")}
    aws = cfg.provider_settings["aws"]
    assert (aws.outputs, aws.connect, aws.stack, aws.allow_custom_endpoint) == ("outputs.json", "private", None, False)
    hosts = cfg.provider_settings["ssh"].hosts
    assert [h.address for h in hosts] == ["gpu1.lab", "10.0.0.7"]
    assert (hosts[0].port, hosts[0].gpus, hosts[1].port, hosts[1].gpus) == (2222, 4, 22, None)
    assert cfg.raw["lease"] == {"heartbeat_ttl": 45}


def test_defaults_from_a_minimal_file(tmp_path):
    exp = tmp_path / "my experiment!"
    exp.mkdir()
    (exp / "fleet.toml").write_text('command = "python x.py"\n')
    cfg = load_config(cwd=exp)
    assert cfg.project == "my-experiment" and cfg.name == "my-experiment"
    assert (cfg.template, cfg.provider, cfg.outputs, cfg.gpus) == (None, "local", "outputs", None)   # None: the provider's default
    assert (cfg.max_duration_s, cfg.heartbeat_ttl_s, cfg.budget) == (4 * 3600, 300, None)


def test_explicit_path_relative_to_cwd_and_directory(tmp_path):
    sub = tmp_path / "exp"
    sub.mkdir()
    (sub / "other.toml").write_text('command = "a"\n')
    (sub / "fleet.toml").write_text('command = "b"\n')
    assert load_config("exp/other.toml", cwd=tmp_path).command == "a"
    assert load_config(sub, cwd=tmp_path).command == "b"
    assert load_config("exp/other.toml", cwd=tmp_path).base_dir == sub


@pytest.mark.parametrize("text, expected", [
    ('command = "x"\ngpus = -2\n', "fleet.toml:2: gpus: must be a positive integer, got -2"),
    ('command = "x"\n\ngpus = "8:A100"\n', "fleet.toml:3: gpus: '8:A100': the count after ':' must be a whole "
                                         "number, as in A100:8"),
    ('command = "x"\ngpus = true\n', "fleet.toml:2: gpus: must be a positive integer or TYPE:COUNT like A100:8, "
                                   "got true"),
    ('command = "x"\ngpus = "A100:0"\n', "fleet.toml:2: gpus: must be a positive integer, got 0"),
    ('command = "x"\ngpus = "nvidia:8"\n', "fleet.toml:2: gpus: 'nvidia' is not a GPU count or type; write a "
                                         "count like 8, or a model like A100, H100, L4 or A100-80GB"),
    ('command = "x"\nprovider = "gcp"\n', "fleet.toml:2: provider: must be one of "
     + ", ".join(repr(n) for n in registry.names(listed_only=True)) + ", got 'gcp'"),   # whatever is registered
    ('command = "x"\nmax_duration = "soon"\n', "fleet.toml:2: max_duration: must be a duration like 90s"),
    ('command = "x"\nmax_duration = 0\n', "fleet.toml:2: max_duration: must be a positive duration"),
    ('command = "x"\nbudget = 0\n', "fleet.toml:2: budget: must be an amount in US dollars > 0"),
    ('command = "x"\nbudget = "lots"\n', "fleet.toml:2: budget: must be an amount in US dollars > 0"),
    ('command = "x"\nper_gpu = "yes"\n', "fleet.toml:2: per_gpu: must be true or false"),
    ('command = 3\n', "fleet.toml:1: command: must be a non-empty string, got 3"),
    ('command = "x"\nproject = "has space"\n', "fleet.toml:2: project: must be 1-63 letters"),
    ('command = "x"\noutputs = "../elsewhere"\n', "fleet.toml:2: outputs: must be a path relative"),
    ('command = "x"\nsecrets = "TOKEN"\n', "fleet.toml:2: secrets: must be an array of environment variable names"),
    ('command = "x"\n[lease]\nheartbeat_ttl = "-5m"\n', "fleet.toml:3: lease.heartbeat_ttl: must be a duration"),
    ('command = "x"\n[budgets]\nwarn_at = 1.5\n', "fleet.toml:3: budgets.warn_at: must be a fraction above 0"),
    ('command = "x"\n[budgets]\nuser_monthly = -1\n', "fleet.toml:3: budgets.user_monthly: must be an amount"),
    ('command = "x"\n[budgets]\nidle_gpu_percent = 150\n', "fleet.toml:3: budgets.idle_gpu_percent: must be a percentage"),
    ('command = "x"\n[env]\nA = [1]\n', "fleet.toml:3: env.A: must be a string, number or true/false, got an array"),
    ('command = "x"\n[env]\n"BAD-NAME" = "1"\n', "fleet.toml:3: env.BAD-NAME: must be an environment variable name"),
    ('command = "x"\n[prices]\nfoo = -1\n', "fleet.toml:3: prices.foo: must be an amount in US dollars ≥ 0"),
    ('command = "x"\n[aws]\noutputs = {a = 1}\n', "fleet.toml:3: aws.outputs: must be a non-empty string"),
    ('command = "x"\n[aws]\nconect = "private"\n', "fleet.toml:3: aws.conect: unknown key (did you mean 'connect'?)"),
    ('command = "x"\n[aws]\nconnect = "vpn"\n', "fleet.toml:3: aws.connect: must be one of 'public', 'private'"),
    ('command = "x"\nstack_dir = "."\n', "fleet.toml:2: stack_dir: unknown key (it belongs under [aws])"),
    ('command = "x"\naws = 1\n', "fleet.toml:2: aws: must be a table ([aws])"),
    ('command = "x"\nlease = 5\n', "fleet.toml:2: lease: must be a table ([lease])"),
    ('command = "x"\n[[hosts]]\naddress = "a"\n\n[[hosts]]\naddress = "b"\nport = 70000\n',
     "fleet.toml:7: hosts[1].port: must be a port number 1-65535, got 70000"),
    ('command = "x"\n[[hosts]]\nuser = "a"\n', "fleet.toml:2: hosts[0]: missing required key 'address'"),
])
def test_each_error_is_one_line_with_file_line_and_key(tmp_path, text, expected):
    assert error_of(tmp_path, text).startswith(expected)


def test_earliest_problem_in_the_file_is_reported(tmp_path):
    message = error_of(tmp_path, 'command = "x"\n[lease]\nheartbeat_ttl = "x"\n', )
    assert message.startswith("fleet.toml:3:")
    message = error_of(tmp_path, 'gpus = 0\ncommand = "x"\nprovider = "nope"\n')
    assert message.startswith("fleet.toml:1: gpus:")


def test_line_numbers_survive_multiline_strings_and_inline_tables(tmp_path):
    text = 'command = """\ngpus = 3\n"""\nlease = { heartbeat_ttl = "x" }\ngpus = -1\n'
    assert error_of(tmp_path, text).startswith("fleet.toml:4: lease.heartbeat_ttl:")
    text = 'command = """\ngpus = 3\n"""\ngpus = -1\n'
    assert error_of(tmp_path, text).startswith("fleet.toml:4: gpus:")
    text = 'command = "x"\nhosts = [\n  {address = "a"},\n  {address = "b", port = 0},\n]\n'
    assert error_of(tmp_path, text).startswith("fleet.toml:2: hosts[1].port:")


@pytest.mark.parametrize("text, expected", [
    ('command = "x"\ngpu = 8\n', "fleet.toml:2: gpu: unknown key (did you mean 'gpus'?)"),
    ('command = "x"\nmax_duraton = "1h"\n', "fleet.toml:2: max_duraton: unknown key (did you mean 'max_duration'?)"),
    ('command = "x"\n[leese]\nheartbeat_ttl = "1m"\n', "fleet.toml:2: leese: unknown key (did you mean 'lease'?)"),
    ('command = "x"\n[lease]\nheartbeat_tl = "1m"\n',
     "fleet.toml:3: lease.heartbeat_tl: unknown key (did you mean 'heartbeat_ttl'?)"),
    ('command = "x"\n[[hosts]]\naddres = "a"\n', "fleet.toml:3: hosts[0].addres: unknown key (did you mean 'address'?)"),
    ('command = "x"\nheartbeat_ttl = "1m"\n', "fleet.toml:2: heartbeat_ttl: unknown key (it belongs under [lease])"),
    ('command = "x"\nzzz = 1\n', "fleet.toml:2: zzz: unknown key (allowed: project, name, command"),
])
def test_unknown_keys_get_did_you_mean(tmp_path, text, expected):
    assert error_of(tmp_path, text).startswith(expected)


@pytest.mark.parametrize("text, line", [
    ('command = "x"\ngpus = = 3\n', 2),
    ('command = "x"\n\n[lease\n', 3),
    ('command = "unterminated\n', 1),
    ('command = "x"\ncommand = "y"\n', 2),
])
def test_toml_syntax_errors_become_one_line_with_the_line(tmp_path, text, line):
    message = error_of(tmp_path, text)
    assert message.startswith(f"fleet.toml:{line}: invalid TOML: ")


def test_toml_nested_past_the_recursion_limit_is_one_line_not_an_internal_error(tmp_path):
    assert error_of(tmp_path, "a = " + "[" * 100_000 + "]" * 100_000 + "\n") == (
        "fleet.toml: invalid TOML: arrays or tables nested too deeply")


@pytest.mark.parametrize("line", ["a." * 50_000 + "b = 1", "[" + "t." * 50_000 + "u]",
                                  '"/".' + "a." * 50_000 + "b = 1", "[env]\nX = {" + "a." * 50_000 + 'b = "1"}',
                                  '[[hosts]]\naddress = "h"\nextra = [\n {' + "a." * 50_000 + "b = 1},\n]",
                                  '["]".' + "a." * 50_000 + "b]", "[[" + "t." * 50_000 + "u]]"])
def test_a_key_of_thousands_of_dotted_parts_is_refused_before_parsing(tmp_path, line):
    """tomllib takes the square of the parts: 50,000 kept `fleet up` parsing for minutes (red team)."""
    import time
    started = time.monotonic()
    message = error_of(tmp_path, 'command = "x"\n' + line + "\n")
    assert message.startswith("fleet.toml:") and message.endswith(": a key of more than 128 dotted parts"), message
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("line", ["# " + "." * 200, '[env]\nNOTE = "' + "." * 300 + '"',
                                  '[env]\nIPS = """\n' + ", ".join(f"10.0.0.{i}" for i in range(60)) + '\n"""',
                                  '[env]\nIPS = """\n["' + '", "'.join(f"10.0.0.{i}" for i in range(60)) + '"]\n"""',
                                  '[env]\nIPS = \'\'\'\n' + " ".join(f"10.0.0.{i}" for i in range(60)) + " = hosts\n\'\'\'"])
def test_dots_in_comments_and_values_are_not_key_parts(tmp_path, line):
    """Review finding: the check counted every dot before the first `=` of every line."""
    (tmp_path / "fleet.toml").write_text('command = "x"\n' + line + "\n")
    from fleet.config.loader import _read
    assert _read(tmp_path / "fleet.toml", "fleet.toml")["command"] == "x"


def test_a_quoted_key_part_may_hold_any_dots():
    from fleet.config.keydepth import check_key_depth
    check_key_depth('"' + "." * 500 + '" = 1\n', "fleet.toml")      # one part: tomllib reads it at once


def test_missing_file_says_fleet_init_creates_one(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path)
    assert "no fleet.toml in" in str(info.value) and "fleet init" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config("nope.toml", cwd=tmp_path)
    assert str(info.value).startswith("nope.toml: no such file") and "fleet init" in str(info.value)


def test_a_fifo_named_as_the_config_is_refused_as_not_a_file_without_reading_it(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe.toml")       # nobody writes it: reading would block for ever
    with pytest.raises(ConfigError) as info:
        load_config("pipe.toml", cwd=tmp_path)
    assert str(info.value).startswith("pipe.toml: not a regular file")


def test_missing_command_is_an_error_unless_overridden(tmp_path):
    write(tmp_path, "gpus = 4\n")
    with pytest.raises(ConfigError, match=r"^fleet.toml: command: required"):
        load_config(cwd=tmp_path)
    assert load_config(cwd=tmp_path, overrides={"command": "python y.py"}).command == "python y.py"


def test_no_file_with_a_command_after_dashes(tmp_path):
    cfg = load_config(cwd=tmp_path, overrides={"command": ["python", "-c", "print('hi there')"], "gpus": 2})
    assert cfg.path is None and cfg.base_dir == tmp_path
    assert cfg.command == "python -c 'print('\"'\"'hi there'\"'\"')'"
    assert cfg.gpus == 2 and cfg.project == tmp_path.name


def test_overrides_replace_file_values_and_are_validated(tmp_path):
    write(tmp_path, 'command = "a"\ngpus = 4\ntemplate = "local-4gpu"\nmax_duration = "4h"\n')
    cfg = load_config(cwd=tmp_path, overrides={"gpus": 8, "template": "local-1gpu", "provider": "local",
                                               "max_duration": "90s", "command": "b", "budget": "3",
                                               "setup": None})
    assert (cfg.gpus, cfg.template, cfg.max_duration_s, cfg.command, cfg.budget) == (8, "local-1gpu", 90, "b",
                                                                                    Decimal(3))
    for overrides, expected in [({"gpus": 0}, "--gpus: must be a positive integer, got 0"),
                                ({"gpus": "-3"}, "--gpus: must be a positive integer, got -3"),
                                ({"max_duration": "x"}, "--max-duration: must be a duration"),
                                ({"budget": "0"}, "--budget: must be an amount"),
                                ({"provider": "gcp"}, "--provider: must be one of"),
                                ({"colour": "red"}, "--colour: not a setting")]:
        with pytest.raises(UsageError) as info:
            load_config(cwd=tmp_path, overrides=overrides)
        assert str(info.value).startswith(expected), str(info.value)


def test_heartbeat_ttl_environment_override(tmp_path, monkeypatch):
    write(tmp_path, 'command = "a"\n[lease]\nheartbeat_ttl = "5m"\n')
    monkeypatch.setenv("FLEET_HEARTBEAT_TTL", "3")
    assert load_config(cwd=tmp_path).heartbeat_ttl_s == 3
    monkeypatch.setenv("FLEET_HEARTBEAT_TTL", "2m")
    assert load_config(cwd=tmp_path).heartbeat_ttl_s == 120
    monkeypatch.setenv("FLEET_HEARTBEAT_TTL", "fast")
    with pytest.raises(UsageError, match=r"^FLEET_HEARTBEAT_TTL: must be a duration"):
        load_config(cwd=tmp_path)


@pytest.mark.parametrize("value, seconds", [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("1h 30m 15s", 5415),
    ("1.5h", 5400), ("600", 600), (600, 600), (60.0, 60), (" 2H ", 7200),
])
def test_parse_duration_accepts(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "h", "5x", "1h30", "30m1h2", "-5m", "0s", 0, -1, 1.5, True, None, [1]])
def test_parse_duration_rejects_with_usage_error(value):
    with pytest.raises(UsageError) as info:
        parse_duration(value)
    assert "duration" in str(info.value) and info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("value, amount", [
    (25, Decimal(25)), (0.1, Decimal("0.1")), ("12.50", Decimal("12.50")), ("$7", Decimal(7)), (" $ 3.5 ", Decimal("3.5")),
])
def test_parse_money_accepts(value, amount):
    assert parse_money(value) == amount


@pytest.mark.parametrize("value", [0, "0", -1, "-1", "abc", "1e3", "nan", float("inf"), True, None, "1,000"])
def test_parse_money_rejects(value):
    with pytest.raises(UsageError, match="US dollars"):
        parse_money(value)


@pytest.mark.parametrize("value", [1e-30, "0.0000001", "$0.0000009"])
def test_parse_money_rejects_what_would_count_as_zero(value, tmp_path, fleet_home):
    """Money is counted in micro-dollars: `--budget 0.0000001` or `project_monthly = 1e-30` passed as
    "> 0" and became a $0.00 budget. The smallest is now $0.000001, and the flag says so in one line."""
    with pytest.raises(UsageError, match=r"at least \$0.000001"):
        parse_money(value)
    assert parse_money("0.000001") == Decimal("0.000001")
    assert parse_money(1e-30, allow_zero=True) == Decimal("1e-30")   # a price: zero is allowed anyway
    from tests.conftest import run_fleet
    if isinstance(value, float):   # only fleet.toml has floats
        (tmp_path / "fleet.toml").write_text(f'project = "t"\ncommand = "true"\n[budgets]\nproject_monthly = {value}\n')
        args, where = ["budget"], "fleet.toml:4: budgets.project_monthly"
    else:
        args, where = ["up", "--dry-run", "--gpus", "1", "-p", "local", "-t", "local-1gpu", "--budget", value,
                       "--", "true"], "--budget"
    proc = run_fleet(args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"fleet: error: {where}: must be at least $0.000001 (a millionth of a dollar, what fleet counts in), "
        f"got {value!r}"]


def test_parse_money_allow_zero():
    assert parse_money(0, allow_zero=True) == 0
    with pytest.raises(UsageError):
        parse_money(-1, allow_zero=True)
