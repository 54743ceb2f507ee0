"""A sweep value never runs as shell code, wherever the template's own shell syntax puts its
placeholder: nested quotes in command substitutions, comments, here-documents, case patterns.
Every line is run by both shells a machine's `sh -c` may be (dash, bash)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from fleet.errors import UsageError
from fleet.sweep.params import Param, plan_trials

SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]
EVIL = ["$(touch PWNED)", "`touch PWNED`", "x'\ntouch PWNED #", "a b;touch PWNED", 'q"$(touch PWNED)"']


def _line(template: str, value: str) -> str:
    [trial] = plan_trials([Param("v", (value,))])
    return trial.command(template)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("value", EVIL)
@pytest.mark.parametrize("template", [
    'printf %s "$(printf %s "{v}")"',          # double quotes inside $( ) inside double quotes
    'printf %s "`printf %s "{v}"`"',
    "printf %s \"$(printf %s '{v}')\"",
    'printf %s $(printf %s "{v}" | tr " " _)',
    'printf %s {v} # v={v}',                  # a line break in the value ended the comment
    'printf %s "$(case x in x) printf %s "{v}";; esac)"',
])
def test_a_value_never_runs_in_a_nested_quote_or_comment(tmp_path, shell, value, template):
    line = _line(template, value)
    got = subprocess.run([shell, "-c", line], cwd=tmp_path, capture_output=True, text=True)
    assert not (tmp_path / "PWNED").exists(), line
    assert got.returncode == 0, (line, got.stderr)
    if "tr" not in template:
        assert got.stdout == value, line


@pytest.mark.parametrize("template", ["cat <<EOF\n{v}\nEOF", "cat <<-'EOF'\n\tx {v}\n\tEOF", "cat <<EOF; echo {v}\n{v}\nEOF"])
def test_a_placeholder_in_a_here_document_is_refused(template):
    # The value was inserted shell-quoted, and a here-document body expands $( ): it ran.
    with pytest.raises(UsageError, match=r"\{v\} stands inside a here-document.*FLEET_PARAM_V"):
        _line(template, "$(touch PWNED)")


@pytest.mark.parametrize("shell", SHELLS)
def test_a_here_document_without_placeholders_and_the_line_after_it_still_work(tmp_path, shell):
    line = _line("cat <<'EOF'\n$HOME {{x}}\nEOF\nprintf %s {v}", "$(touch PWNED)")
    got = subprocess.run([shell, "-c", line], cwd=tmp_path, capture_output=True, text=True)
    assert got.stdout == "$HOME {x}\n$(touch PWNED)" and not (tmp_path / "PWNED").exists()


def test_a_placeholder_where_dash_and_bash_read_the_quotes_differently_is_refused():
    with pytest.raises(UsageError, match=r"\$'…' quotes"):
        _line("printf %s $'it\\'s' {v}", "$(touch PWNED)")
    with pytest.raises(UsageError, match=r"\$'…' quotes"):
        _line("printf %s $'{v}'", "x")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("value", ["1e-3", "a\\x41b", "C:\\new", "$HOME", "a b", *EVIL])
@pytest.mark.parametrize("template", ["printf %s ${v}", 'printf %s "${v}"', "printf %s '${v}'", "printf %s x${v}y"])
def test_dollar_brace_name_is_the_value_as_written(tmp_path, shell, value, template):
    """`${v}`, the spelling of a shell variable, is the value too. The $ used to stay in front:
    `$1e-3` is $1 then e-3, and before a quoted value bash read $'…' (a\\x41b became aAb)."""
    line = _line(template, value)
    got = subprocess.run([shell, "-c", line], cwd=tmp_path, capture_output=True, text=True)
    assert not (tmp_path / "PWNED").exists(), line
    want = f"x{value}y" if "x" in template else value
    assert got.returncode == 0 and got.stdout == want, (line, got.stdout, got.stderr)


def test_a_placeholder_after_a_double_dollar_is_refused():
    with pytest.raises(UsageError, match=r"\{v\} follows `\$\$`"):
        _line("echo $${v}", "1")



@pytest.mark.parametrize("value", EVIL + ["my run", "*"])
@pytest.mark.parametrize("template", [
    "sh -c 'printf %s {v}'",                   # the script of another shell: quoted for the outer one only
    'bash -c "printf %s {v}"',
    'timeout 60 /bin/bash -lc "printf %s {v}"',
    'printf %s "$(sh -c "printf %s {v}")"',
    "eval printf %s {v}",
])
def test_a_value_a_nested_shell_would_read_again_is_refused(tmp_path, template, value):
    # `bash -c "train --name {v}"` gave train two words for "my run", and ran $(touch PWNED).
    with pytest.raises(UsageError, match=r"\{v\} stands in a script that (sh|bash|eval) reads again.*FLEET_PARAM_V"):
        _line(template, value)
    [trial] = plan_trials([Param("v", (value,))])
    with pytest.raises(UsageError, match=r"reads again"):
        trial.command_argv(("sh", "-c", "printf %s {v}"))      # `fleet sweep -- sh -c 'printf %s {v}'`
    for shell in SHELLS:     # a plain word there still runs; any value as the nested shell's argument too
        run = lambda line: subprocess.run([shell, "-c", line], cwd=tmp_path, capture_output=True, text=True).stdout  # noqa: E731
        assert run(_line(template, "1e-3")) == "1e-3"
        assert run(_line("sh -c 'printf %s \"$0\"' {v}", value)) == value
        assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("template", [
    'python main.py eval --name "{v}"',        # eval as a program's argument: no shell reads it again
    'python train.py --split eval --tag "{v}"',
    'bash train.sh -c "{v}"',                  # -c after the script: the script's own option
    'sh run.sh -config "{v}"',
])
def test_a_value_in_an_ordinary_command_that_mentions_a_shell_or_eval_is_not_refused(template):
    assert "my run" in _line(template, "my run")


@pytest.mark.parametrize("template", ['bash -e -o pipefail -c "printf %s {v}"', 'X=1 eval printf %s {v}',
                                      'command eval printf %s {v}'])
def test_a_shell_with_options_before_its_c_or_eval_after_assignments_still_refuses(template):
    with pytest.raises(UsageError, match="reads again"):
        _line(template, "my run")
