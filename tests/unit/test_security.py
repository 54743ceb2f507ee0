"""Security checks that need no machine: host keys are never learnt blindly, and nothing a user
typed is interpolated raw into a shell command line (SECURITY.md)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.models import Machine
from fleet.remote.ssh import shell_command

REPO = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("fleet", "stacks", "images", "scripts") for p in (REPO / d).rglob("*")
           if p.is_file() and p.suffix in (".py", ".sh", ".toml", ".json", ".yaml", ".yml", "")
           and "__pycache__" not in p.parts]
# Anything that accepts an unknown or changed host key without the pinned one.
BLIND_TRUST = re.compile(r"AutoAddPolicy|WarningPolicy|StrictHostKeyChecking[= ]+(no|off|accept-new)\b"
                         r"|UserKnownHostsFile[= ]+/dev/null|missing_host_key_policy\((?!paramiko\.RejectPolicy)",
                         re.IGNORECASE)


def test_no_host_key_check_is_disabled_anywhere():
    assert len(SOURCES) > 50          # the scan really looked at the code
    hits = []
    for path in SOURCES:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if BLIND_TRUST.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "host key checks weakened:\n" + "\n".join(hits)


def test_paramiko_clients_are_made_only_with_the_pinned_reject_policy():
    makers = [str(p.relative_to(REPO)) for p in (REPO / "fleet").rglob("*.py")
              if "SSHClient(" in p.read_text()]
    assert makers == ["fleet/remote/ssh.py"], makers
    text = (REPO / "fleet" / "remote" / "ssh.py").read_text()
    assert "set_missing_host_key_policy(paramiko.RejectPolicy())" in text


HOSTILE = ["$(touch {canary})", "`touch {canary}`", "'; touch {canary}; '", "\"; touch {canary}; \"",
           "a\ntouch {canary}", "x && touch {canary}", "x | touch {canary}", "$((1+1)) ${{HOME}} *",
           "-rf /", "\\'$(touch {canary})\\'", "x; touch {canary} #"]


def _sh(line: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=10, input=stdin)


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_env_values_paths_and_argv_are_never_executed(tmp_path, template):
    canary = tmp_path / "pwned"
    value = template.format(canary=canary)
    odd_dir = tmp_path / value.replace("/", "_").replace("\n", "_")[:60]
    odd_dir.mkdir()
    # env value and cwd: taken literally
    line = shell_command(["printf", "%s|%s", "$V", "$PWD"], env={"V": value}, cwd=str(odd_dir))
    line = line.replace("'$V'", '"$V"').replace("'$PWD'", '"$PWD"')   # expand the variables, not the values
    out = _sh(line, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{value}|{odd_dir}"
    # argv: each element one literal argument
    out = _sh(shell_command(["printf", "%s", value]), tmp_path)
    assert out.stdout == value
    assert not canary.exists(), f"{value!r} was executed"


@pytest.mark.parametrize("key", ["A;touch x", "$(id)", "1ABC", "A B", "A=B", "", "A\nB"])
def test_hostile_env_names_are_refused(key):
    with pytest.raises(ValueError):
        shell_command("true", env={key: "v"})


def test_the_process_wrapper_quotes_cwd_env_and_pidfile(tmp_path):
    """exec.wrapped_command, run through a real sh and the real agent: only the user's own command
    is shell (that is its contract); everything fleet adds around it is literal."""
    from fleet.remote.agent import AGENT_FILES
    from fleet.remote.exec import ProcessSpec, process_env_payload, wrapped_command
    canary = tmp_path / "pwned"
    hostile = f"$(touch {canary})'\"; touch {canary}"
    machine = Machine(id="m-1", lease_id="l-1", node_rank=0, host="127.0.0.1", port=22, user="u",
                      key_path="/nonexistent", host_key="ssh-ed25519 AAAA", workdir=str(tmp_path),
                      gpu_slots=(0,), python=sys.executable)
    machine_agent = Path(machine.agent_path)
    machine_agent.parent.mkdir(parents=True, exist_ok=True)
    for source in AGENT_FILES:   # agent.py and the modules it imports (containment.py)
        (machine_agent.parent / source.name).write_text(source.read_text())
    cwd = tmp_path / ("w " + hostile.replace("/", "_"))
    spec = ProcessSpec(machine, "0", 'printf "%s" "$SECRETISH"', {"SECRETISH": hostile}, str(cwd),
                       str(tmp_path / ("pid " + hostile.replace("/", "_"))))
    line = wrapped_command(spec)
    assert hostile not in line   # environment values never travel on the command line
    out = _sh(line, tmp_path, stdin=process_env_payload(spec).decode())   # they come on stdin, as over SSH
    assert out.returncode == 0, out.stderr
    assert out.stdout == hostile and cwd.is_dir()
    assert not canary.exists()


def test_fleet_ssh_passes_argv_not_a_shell_string():
    from fleet.leases import ssh_argv
    assert callable(ssh_argv)   # the contract exists; tests/unit/test_command_words.py runs it
    text = (REPO / "fleet" / "leases.py").read_text()
    assert "command_line(command)" in text and "shlex.quote(m.workdir" in text


def test_remote_shell_snippets_quote_every_interpolated_value():
    """Review aid: every f-string shell snippet sent to a machine quotes what it interpolates."""
    offenders = []
    for path in (REPO / "fleet").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.(run|exec_command)\(f[\"']", line) or re.search(r"\bcmd = f[\"']", line):
                for expr in re.findall(r"\{([^{}]+)\}", line):
                    if not expr.startswith(("shlex.quote(", "shlex.join(", "log", "pidfile")):
                        offenders.append(f"{path.relative_to(REPO)}:{n}: {{{expr}}}")
    assert not offenders, offenders
    assert shlex.quote("a'b") == "'a'\"'\"'b'"


def test_the_stacks_policy_tests_exist():
    """They run with the rest of tests/unit (Pulumi mocks); here: none of them was dropped."""
    text = (REPO / "tests" / "unit" / "stacks" / "test_stack_policies.py").read_text()
    for name in ("test_no_security_group_rule_opens_ssh_to_the_world",
                 "test_every_launch_template_requires_imdsv2_and_encrypts",
                 "test_every_bucket_blocks_public_access_and_encrypts",
                 "test_no_iam_policy_allows_star_actions_on_star_resources"):
        assert f"def {name}(" in text, name


def test_the_run_environment_cannot_retag_the_experiment_as_another_machine(tmp_path):
    """[env] / --env FLEET_MACHINE_ID=... replaced the tag fleet gives every experiment process: on a
    host without cgroups (the tag is what release ends by) the process escaped its lease, or was
    tagged as someone else's machine. fleet's own variables win, as process_env says of the others."""
    from fleet.remote.agent import AGENT_FILES
    from fleet.remote.exec import ProcessSpec, process_env_payload, wrapped_command
    machine = Machine(id="m-1", lease_id="l-1", node_rank=0, host="127.0.0.1", port=22, user="u",
                      key_path="/nonexistent", host_key="ssh-ed25519 AAAA", workdir=str(tmp_path),
                      gpu_slots=(0,), python=sys.executable)
    machine_agent = Path(machine.agent_path)
    machine_agent.parent.mkdir(parents=True, exist_ok=True)
    for source in AGENT_FILES:
        (machine_agent.parent / source.name).write_text(source.read_text())
    spec = ProcessSpec(machine, "0", 'printf "%s|%s" "$FLEET_MACHINE_ID" "$FLEET_MACHINE_ROOT"',
                       {"FLEET_MACHINE_ID": "l-victim-n0", "FLEET_MACHINE_ROOT": "/elsewhere"}, str(tmp_path),
                       str(tmp_path / "pid"))
    out = _sh(wrapped_command(spec), tmp_path, stdin=process_env_payload(spec).decode())
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"m-1|{tmp_path}"
