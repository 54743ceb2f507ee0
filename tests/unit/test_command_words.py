"""One rule for a command given as words after `--` (fleet/config/command.py): one word is a shell
command line, several are argv; `fleet up`, `fleet run`, `fleet ssh` and `fleet sweep` all follow it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fleet.config.command import command_line
from fleet.config.loader import load_config


@pytest.mark.parametrize("words, line", [
    (["echo A; echo B"], "echo A; echo B"),
    (["python train.py"], "python train.py"),
    (["python", "train.py", "--lr", "3e-4"], "python train.py --lr 3e-4"),
    (["echo", "a; rm -rf ~"], "echo 'a; rm -rf ~'"),      # several words: each one stays one word
    (["sh", "-c", "echo $X"], "sh -c 'echo $X'"),
])
def test_one_word_is_a_shell_line_several_are_quoted_argv(words, line):
    assert command_line(words) == line


def test_fleet_up_words_reach_the_config_by_the_same_rule(tmp_path):
    (tmp_path / "fleet.toml").write_text('command = "true"\n')
    assert load_config(cwd=tmp_path, overrides={"command": ["echo A; echo B"]}).command == "echo A; echo B"
    assert load_config(cwd=tmp_path, overrides={"command": ["echo", "A;", "B"]}).command == "echo 'A;' B"


def test_fleet_ssh_runs_one_word_as_a_shell_line(fleet_home):
    from fleet.leases import ssh_argv
    machine = SimpleNamespace(node_rank=0, host="127.0.0.1", port=2222, host_key="ssh-ed25519 AAAA",
                              key_path="/k", user="u", workdir="/w")
    state = SimpleNamespace(get_lease=lambda _id: SimpleNamespace(id="l-1", status="active", machines=[machine]))
    assert ssh_argv("l-1", 0, ["echo A; echo B"], state=state)[-1].endswith("; echo A; echo B")
    assert ssh_argv("l-1", 0, ["echo", "A; echo B"], state=state)[-1].endswith("; echo 'A; echo B'")
