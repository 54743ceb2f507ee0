"""`[aws] stack = NAME` reads the stack's outputs with pulumi in the experiment's directory, where a
cloned repository's Pulumi.yaml chooses the backend: `backend: url:` of its author's had pulumi present
the user's Pulumi credentials there. A project backend is refused before pulumi runs unless the user
is logged in to it or chose the backend with PULUMI_BACKEND_URL. Here a fake `pulumi` on PATH logs
every call."""
from __future__ import annotations

import json

import pytest

from fleet.errors import ConfigError, EnvironmentProblem
from fleet.providers.aws.outputs import load_outputs_from_stack

FAKE_PULUMI = '#!/bin/sh\necho "$@" >> "{log}"\n[ "$1" = version ] && {{ echo v3.150.0; exit 0; }}\nexit 1\n'
THEIRS = "https://api.state-of-the-author.example"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    bin_dir, home, repo = tmp_path / "bin", tmp_path / "home", tmp_path / "repo"
    for d in (bin_dir, home, repo):
        d.mkdir()
    (bin_dir / "pulumi").write_text(FAKE_PULUMI.format(log=tmp_path / "pulumi.log"))
    (bin_dir / "pulumi").chmod(0o755)
    (repo / "Pulumi.yaml").write_text(f"name: infra\nruntime: python\nbackend:\n  url: {THEIRS}\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PULUMI_HOME", raising=False)
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    return repo


def _pulumi_ran(repo) -> bool:
    return (repo.parent / "pulumi.log").exists()


def test_a_repositorys_own_backend_is_refused_before_pulumi_runs(repo):
    with pytest.raises(ConfigError) as info:
        load_outputs_from_stack("dev", repo)
    line = info.value.one_line()
    assert f"sets Pulumi backend '{THEIRS}', which is not the one you are logged in to (none)" in line, line
    assert not _pulumi_ran(repo)


@pytest.mark.parametrize("how", ["logged-in-there", "PULUMI_BACKEND_URL"])
def test_the_users_own_backend_choice_lets_pulumi_read_the_outputs(repo, monkeypatch, how):
    if how == "logged-in-there":
        (repo.parent / "home" / ".pulumi").mkdir()
        (repo.parent / "home" / ".pulumi" / "credentials.json").write_text(json.dumps({"current": THEIRS + "/"}))
    else:
        monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///srv/pulumi-state")
    with pytest.raises(EnvironmentProblem) as info:         # the fake pulumi then fails to select the stack
        load_outputs_from_stack("dev", repo)
    assert "cannot read outputs of Pulumi stack 'dev'" in info.value.one_line()
    assert _pulumi_ran(repo)


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi")) + "backend:\n  url: *i\n"


@pytest.mark.parametrize("text, said", [
    ("name: infra\nupdated: 2001-13-01\n", "month must be in 1..12"),   # a date YAML cannot build
    ("[" * 20000, "nested too deeply"),
    (LAUGHS, "backend url is not a string"),     # aliases: 10^9 items once printed, a hang
], ids=["bad-date", "deep", "laughs"])
def test_a_project_file_that_cannot_be_read_is_one_line(repo, text, said):
    (repo / "Pulumi.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_outputs_from_stack("dev", repo)
    assert said in info.value.one_line()
    assert not _pulumi_ran(repo)


@pytest.mark.parametrize("where", ["Pulumi.json", "../Pulumi.yaml"])
def test_a_backend_pulumi_would_find_elsewhere_is_refused_too(repo, where):
    """pulumi reads Pulumi.json as well, and looks for the project file in the parent directories
    (the experiment is often a subdirectory of the cloned repository)."""
    (repo / "Pulumi.yaml").unlink()
    if where.startswith(".."):
        repo = repo / "exp"
        repo.mkdir()
    (repo / where).write_text(json.dumps({"name": "infra", "backend": {"url": THEIRS}}))
    with pytest.raises(ConfigError) as info:
        load_outputs_from_stack("dev", repo)
    assert f"sets Pulumi backend '{THEIRS}'" in info.value.one_line()
    assert not _pulumi_ran(repo.parent if where.startswith("..") else repo)


def test_a_backend_pulumi_finds_above_a_linked_directory_is_refused(repo, monkeypatch):
    """The experiment is reached through a link in the repository (`exp -> deep/real/exp`). pulumi
    takes its directory as the shell named it ($PWD, as Go's os.Getwd does) and goes up to `exp`'s
    parent, the repository's Pulumi.yaml with the author's backend; fleet went up from the resolved
    path and stopped at a harmless Pulumi.yaml in deep/real, so pulumi ran with the author's backend."""
    real = repo / "deep" / "real"
    (real / "exp").mkdir(parents=True)
    (real / "Pulumi.yaml").write_text("name: other\nruntime: python\n")
    (repo / "exp").symlink_to("deep/real/exp")
    monkeypatch.chdir(repo / "exp")
    monkeypatch.setenv("PWD", str(repo / "exp"))
    with pytest.raises(ConfigError) as info:
        load_outputs_from_stack("dev", ".")
    assert f"sets Pulumi backend '{THEIRS}'" in info.value.one_line()
    assert not _pulumi_ran(repo)
