"""Fuzzing what users and files hand to fleet (Hypothesis): fleet.toml, CLI arguments, stack config,
snapshot manifests, run records.

Invariant for every target: success, or a FleetError whose message is one line (the CLI: a non-zero
exit and a single `fleet: error:` line) — never another exception, never a traceback — and nothing
written before is changed. Case counts per target are the `max_examples` below (FUZZ_SCALE scales
them; the suite's default totals 1,250 cases).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import string
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.errors import FleetError

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
CASES = {"fleet_toml": 300, "cli": 300, "stack_config": 200, "manifest": 300, "records": 150}


def fuzz(target: str):
    return settings(max_examples=max(1, int(CASES[target] * SCALE)), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much, HealthCheck.data_too_large])


def tree_digest(root: Path) -> dict[str, str]:
    """path → sha256 of every file under root; SQLite databases row by row instead (`path#table:rowid`),
    so appending rows (a new lease, a failed run) is allowed but changing or losing one is not.
    FLEET_HOME/cache is left out: the stat cache and tree hits are rebuilt from the files they
    describe, and a file too new to trust (rememberable) is remembered by a later call."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.endswith(("-wal", "-shm")) or ".write-probe" in p.name:
            continue
        if (root / "cache") in p.parents:
            continue
        if p.name == "records.tip":   # the chain's anchor: moves with every appended record (rows checked below)
            continue
        if p.suffix == ".db":
            conn = sqlite3.connect(p)
            try:
                # `users` is an upsert of who was last seen when (by design), not a record
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                                     " AND name NOT LIKE 'sqlite_%' AND name <> 'users'")]
                for table in tables:
                    try:
                        rows = conn.execute(f'SELECT rowid, * FROM "{table}"').fetchall()
                    except sqlite3.OperationalError:       # WITHOUT ROWID tables: whole-table digest
                        rows = [(i, *r) for i, r in enumerate(sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"'))))]
                    for row in rows:
                        out[f"{p}#{table}:{row[0]}"] = hashlib.sha256(repr(row[1:]).encode()).hexdigest()
            finally:
                conn.close()
        else:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    changed = [p for p, h in before.items() if after.get(p) != h]
    assert not changed, f"previously written files changed or vanished: {changed}"


def assert_one_line(exc: FleetError) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


# -- strategies ------------------------------------------------------------------------------------
KEYS = ["project", "name", "command", "setup", "gpus", "template", "provider", "env", "outputs", "max_duration",
        "per_gpu", "python", "budget", "secrets", "data", "store", "lease", "heartbeat_ttl", "budgets", "prices",
        "hosts", "aws", "user", "state_url", "grace", "idle_gpu_percent", "idle_minutes", "gpu", "comand",
        "project_monthly", "user_monthly", "run", "address", "workdir", "region", "instance_type"]
weird_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
scalar = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                   weird_text, st.sampled_from(["10m", "2h", "0s", "-1h", "1e9h", "local", "aws", "ssh", "local-4gpu",
                                                "50", "-3", "nan", "$1", "1.5", "s3://b/p", "postgresql://x/y",
                                                # beyond every bound (a year, 1 day of TTL, 65536 GPUs), and NUL
                                                "99999999999999h", "366d", "25h", "a\x00b", "\x00"]),
                   st.sampled_from([10**20, 65537, 31536001, 86401, -(10**20)]))
toml_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                          max_leaves=12)


def toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, str):
        return json.dumps(v)      # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(x)}" for k, x in v.items()) + "}"


@st.composite
def fleet_toml_text(draw) -> str:
    """Structured documents (mostly right keys, wrong or odd values) and raw, broken text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=200))
    doc = draw(st.dictionaries(st.sampled_from(KEYS), toml_value, max_size=8))
    lines = [f"{k} = {toml_literal(v)}" for k, v in doc.items()]
    for table in draw(st.lists(st.sampled_from(["lease", "data", "budgets", "prices", "aws", "env"]), max_size=2,
                               unique=True)):
        lines.append(f"[{table}]")
        for k, v in draw(st.dictionaries(st.sampled_from(KEYS), scalar, max_size=3)).items():
            lines.append(f"{json.dumps(k)} = {toml_literal(v)}")
    if draw(st.booleans()):
        lines.append("[[hosts]]")
        lines.append(f"address = {toml_literal(draw(scalar))}")
    return "\n".join(lines) + "\n"


# -- fleet.toml ------------------------------------------------------------------------------------
@fuzz("fleet_toml")
@given(text=fleet_toml_text(), gpus=st.one_of(st.none(), st.integers(-5, 70), st.integers(65530, 10**22)))
def test_fuzz_fleet_toml(tmp_path_factory, text, gpus):
    from fleet.config.loader import load_config
    d = tmp_path_factory.mktemp("cfg")
    path = d / "fleet.toml"
    path.write_text(text)
    before = tree_digest(d)
    try:
        config = load_config(path, overrides={"gpus": gpus})
    except FleetError as exc:
        assert_one_line(exc)
        assert exc.exit_code == 2, (exc, exc.exit_code)
    else:
        from fleet.config.values import MAX_DURATION_S, MAX_GPUS, MAX_HEARTBEAT_TTL_S
        assert 0 < config.max_duration_s <= MAX_DURATION_S and 0 < config.heartbeat_ttl_s <= MAX_HEARTBEAT_TTL_S
        assert config.gpus is None or 1 <= config.gpus <= MAX_GPUS
        strings = [config.command, config.setup or "", *config.env.values(), *config.data.values()]
        assert not any("\x00" in text for text in strings), strings
    assert_unchanged(before, tree_digest(d))


# -- CLI arguments ---------------------------------------------------------------------------------
SAFE_COMMANDS = [["up"], ["status"], ["down"], ["extend"], ["logs"], ["ssh"], ["init"], ["report"], ["budget"],
                 ["rerun"], ["audit"], ["runs", "ls"], ["runs", "show"], ["snapshot", "ls"], ["snapshot", "show"],
                 ["snapshot", "diff"], ["snapshot", "verify"], ["snapshot", "create"], ["hosts", "ls"],
                 ["hosts", "rm"], ["run"], ["nonsense"], []]
FLAGS = ["--json", "--all", "--gpus", "-g", "--template", "--provider", "-f", "--max-duration", "--keep",
         "--budget", "--since", "--until", "--format", "--verify", "--md", "-h", "--help", "--version", "--name",
         "--by", "--csv", "--html", "--out", "--force", "--dry-run", "-p", "--period", "--allow-dirty", "--ci"]
token = st.one_of(st.sampled_from(FLAGS), weird_text.filter(lambda s: s != "--" and "\x00" not in s),
                  st.sampled_from(["0", "-1", "8", "999999999999", "99999999999999999999", "99999999999999h", "366d",
                                   "65", "l-deadbeef", "r-20260101-000000-abcd", "1h",
                                   "x" * 300, "../../etc/passwd", "$(touch /tmp/pwned)", "a;b", "'", '"', "\n"]))


@pytest.fixture
def cli_world(tmp_path, monkeypatch):
    """A FLEET_HOME with a real state database and a snapshot, and an experiment dir with fleet.toml;
    machines cannot start (no sshd) and no cloud is reachable, so every command stays in-process."""
    home, exp = tmp_path / "home", tmp_path / "exp"
    exp.mkdir()
    (exp / "data").mkdir()
    (exp / "data" / "a.txt").write_text("hello\n")
    (exp / "fleet.toml").write_text('project = "fz"\ncommand = "true"\ntemplate = "local-1gpu"\n')
    for key in list(os.environ):
        if key.startswith(("FLEET_", "AWS_")) or key in ("CI", "GITHUB_ACTIONS"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FLEET_HOME", str(home))
    monkeypatch.setenv("FLEET_SSHD", str(tmp_path / "no-sshd"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fuzz")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fuzz")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")     # nothing listens: fails fast, locally
    monkeypatch.chdir(exp)
    from fleet.snapshots import create_snapshot, open_store
    from fleet.state import open_state
    open_state().close()
    create_snapshot(exp / "data", open_store(None), name="seed")
    return home, exp


def run_cli(argv: list[str]) -> tuple[int, str]:
    from fleet.cli.errors import main_guard
    from fleet.cli.main import app
    err, out = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["fleet", *argv]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main_guard(app)
    finally:
        sys.argv = old
    return code, err.getvalue()


@fuzz("cli")
@given(command=st.sampled_from(SAFE_COMMANDS), args=st.lists(token, max_size=5))
def test_fuzz_cli_arguments(cli_world, command, args):
    home, exp = cli_world
    before = tree_digest(home) | tree_digest(exp)
    code, err = run_cli(command + args)
    assert "Traceback" not in err and "internal error" not in err, (command + args, err)
    errors = [line for line in err.splitlines() if line.startswith("fleet: error:")]
    if code != 0 and errors:
        assert len(errors) == 1, err
    if errors:
        assert code != 0, (command + args, err)
    assert_unchanged(before, tree_digest(home) | tree_digest(exp))


# -- stack config ------------------------------------------------------------------------------------
STACK_KEYS = ["project", "sshCidrs", "allowWorldSsh", "vpcCidr", "availabilityZones", "azCount", "templates",
              "bucket", "reaper", "bootDeadlineHours", "heartbeatTtlMinutes", "unknownKey"]
cidrs = st.sampled_from(["0.0.0.0/0", "10.0.0.0/16", "203.0.113.7/32", "::/0", "300.1.1.1/8", "10.0.0.0/33", "x"])
stack_value = st.one_of(scalar, st.lists(st.one_of(cidrs, scalar), max_size=3),
                        st.lists(st.dictionaries(st.sampled_from(["name", "instanceTypes", "gpus", "recipe", "spot",
                                                                  "gpuModel", "rootGb", "x"]),
                                                 st.one_of(scalar, st.lists(scalar, max_size=3)), max_size=5),
                                 max_size=3),
                        st.dictionaries(st.sampled_from(["name", "forceDestroy", "schedule", "enabled", "x"]), scalar,
                                        max_size=3))


@fuzz("stack_config")
@given(raw=st.dictionaries(st.sampled_from(STACK_KEYS), st.one_of(stack_value, stack_value.map(json.dumps)),
                           max_size=7),
       region=st.one_of(st.none(), st.sampled_from(["us-east-1", "eu-west-3", "moon-1", ""]), weird_text))
def test_fuzz_stack_config(raw, region):
    stacks_config = pytest.importorskip("stacks.config")
    try:
        cfg = stacks_config.parse_stack_config(raw, project="fz", stack="dev", region=region,
                                               recipe_exists=lambda name: name == "base")
    except FleetError as exc:
        assert_one_line(exc)
    else:
        world = {"0.0.0.0/0", "::/0"}
        if world & set(getattr(cfg, "ssh_cidrs", ()) or ()):
            assert raw.get("allowWorldSsh") not in (None, False, "false"), (raw, cfg)


# -- snapshot manifests --------------------------------------------------------------------------------
hexes = st.text(alphabet="0123456789abcdef", min_size=0, max_size=64)
paths = st.one_of(st.sampled_from(["a", "a/b.txt", "../x", "/etc/passwd", "a/../../b", "./a", "a//b", "", ".",
                                   "a/./b", "ok/file"]), weird_text)
entry = st.fixed_dictionaries({}, optional={
    "path": paths, "type": st.sampled_from(["file", "dir", "symlink", "fifo", 3]), "mode": st.one_of(
        st.integers(-1, 0o7777777), scalar), "size": st.one_of(st.integers(-5, 2**40), scalar),
    "sha256": hexes, "target": paths, "chunks": st.lists(st.one_of(st.tuples(hexes, st.integers(-1, 10**6)),
                                                                  st.lists(scalar, max_size=3), scalar), max_size=3)})


@st.composite
def manifest_bytes(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=300))
    body = {"format": draw(st.one_of(st.just(1), st.just("fleet-manifest/1"), scalar)),
            "entries": draw(st.one_of(st.lists(entry, max_size=4), scalar))}
    if draw(st.booleans()):
        body["deleted"] = draw(st.one_of(st.lists(paths, max_size=3), scalar))
    if kind == 1:
        from fleet.snapshots import manifest as m
        body["format"] = m.FORMAT
    return json.dumps(body).encode()


@fuzz("manifest")
@given(data=manifest_bytes(), with_id=st.booleans())
def test_fuzz_snapshot_manifest(data, with_id):
    from fleet.snapshots.manifest import Manifest, check_relpath
    expected = hashlib.sha256(data).hexdigest() if with_id else None
    try:
        manifest = Manifest.from_bytes(data, expected_id=expected)
    except FleetError as exc:
        assert_one_line(exc)
        return
    for e in manifest.entries:              # whatever parses is safe to materialise
        check_relpath(e.path)
    for rel in manifest.deleted:
        check_relpath(rel)
    assert Manifest.from_bytes(manifest.canonical_bytes()).id == manifest.id


# -- run records -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def record_db(tmp_path_factory):
    from fleet.records.chain import RunRecord, append_record
    from fleet.state.db import Database
    path = tmp_path_factory.mktemp("records") / "state.db"
    db = Database(path)
    for i in range(3):
        append_record(RunRecord(run_id=f"r-{i}", command="true", env={"TOKEN": "s3cret", "A": "b"}), db)
    db.close()
    return path


tamper = st.fixed_dictionaries({}, optional={
    "body": st.one_of(weird_text, st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
                      st.dictionaries(st.sampled_from(["run_id", "command", "env", "prev_hash", "machine_types",
                                                       "gpus", "data_snapshots", "version", "x"]),
                                      toml_value, max_size=5).map(json.dumps),
                      st.lists(scalar, max_size=3).map(json.dumps)),
    "hash": hexes, "prev_hash": hexes, "run_id": st.sampled_from(["r-0", "r-1", "r-9", ""])})


@fuzz("records")
@given(row=st.integers(1, 3), change=tamper)
def test_fuzz_run_records(record_db, tmp_path_factory, row, change):
    import shutil
    from fleet.records.chain import get_record, list_records, verify_chain, verify_chain_or_raise
    from fleet.state.db import Database
    path = tmp_path_factory.mktemp("rec") / "state.db"
    shutil.copyfile(record_db, path)
    if change:
        conn = sqlite3.connect(path)
        sets = ", ".join(f"{k} = ?" for k in change)
        try:
            conn.execute(f"UPDATE run_records SET {sets} WHERE seq = ?", (*change.values(), row))
            conn.commit()
        except sqlite3.IntegrityError:
            return          # the schema itself refused the tampering
        finally:
            conn.close()
    db = Database(path)
    try:
        problems = verify_chain(db)
        assert isinstance(problems, list) and all("\n" not in p for p in problems)
        try:
            verify_chain_or_raise(db)
        except FleetError as exc:
            assert_one_line(exc)
        for call in (lambda: list_records(db), lambda: get_record("r-1", db), lambda: get_record("r-", db)):
            try:
                call()
            except FleetError as exc:
                assert_one_line(exc)
    finally:
        db.close()


def test_fuzz_case_budget_is_at_least_1000():
    assert sum(CASES.values()) >= 1000


@pytest.mark.parametrize("entry", [
    {"path": "a", "type": "file", "sha256": "/home/u/.bashrc", "chunks": []},
    {"path": "a", "type": "file", "sha256": "0" * 64, "chunks": [["../../etc/passwd", 1]]},
    {"path": "a", "type": "file", "sha256": "A" * 64, "chunks": []},
    {"path": "a", "type": "device", "sha256": "", "chunks": []},
    {"path": "../a", "type": "dir"},
])
def test_a_manifest_naming_a_path_where_a_hash_goes_is_refused(entry):
    """A manifest anyone who can write a shared store may plant: every hash names a file in a store or
    cache, so one that is not a sha256 in hex is refused when read, before verify or materialise opens it."""
    import json

    from fleet.errors import IntegrityError
    from fleet.snapshots.manifest import Manifest
    data = json.dumps({"format": 3, "entries": [entry]}).encode()
    with pytest.raises(IntegrityError) as err:
        Manifest.from_bytes(data)
    assert_one_line(err.value)
