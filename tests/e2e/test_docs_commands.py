"""Every shell block of docs/*.md and README.md that runs fleet commands runs as written on the local
provider, or says why not: `<!-- not-run: REASON -->` on the line above it (AWS, Slurm, real hosts),
reported here as a skip with that reason. README's tour is tests/e2e/test_readme_tour.py's.

Each block runs in bash (`set -euo pipefail`) in its own copy of one project, the one the docs assume:
a git repository made by `fleet init` with a train.py (metrics in $FLEET_OUTPUT_DIR, a checkpoint in
$FLEET_CHECKPOINT_DIR), data/train, a snapshot named train-v2 of the data as it was, examples/ from
this repository, and some history: a two-trial sweep and a `fleet up`. The pages' placeholders are
filled from that state just before the line that uses them: RUN (a live lease's run, else the newest
run), LEASE (a live lease, else RUN's), A B C (the newest runs), SWEEP (the newest runs/s-* here).
Blocks run four at a time, so the whole module stays well inside 90 s on an idle machine.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, processes_under, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("docs-commands")]

PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->")
SHELL = {"", "bash", "sh", "shell", "console"}
PLACEHOLDERS = ("RUN", "LEASE", "A", "B", "C", "SWEEP")
BLOCK_TIMEOUT_S = 80

TRAIN = """\
import json, os, sys
out = os.environ.get("FLEET_OUTPUT_DIR", "outputs")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"val_loss": 0.5, "val_acc": 0.9, "loss": 0.5, "accuracy": 0.9}, f)
if os.environ.get("FLEET_CHECKPOINT_DIR"):
    with open(os.path.join(os.environ["FLEET_CHECKPOINT_DIR"], "step"), "w") as f:
        f.write("1")
print("trained", *sys.argv[1:])
"""

# Run inside each block's shell before a line with placeholders: prints RUN=… LEASE=… A=… …
IDS = """\
import glob, json, os, subprocess
def fleet(*args):
    done = subprocess.run(["fleet", *args, "--json"], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else {}
leases = fleet("status").get("leases", [])
runs = fleet("runs", "ls").get("runs", [])
ids = [r["run_id"] for r in runs] + ["", "", ""]
live = [r["id"] for lease in leases for r in lease.get("runs", [])]
run = (live or ids)[0]
lease = leases[0]["id"] if leases else next((r.get("lease_id") or "" for r in runs if r["run_id"] == run), "")
sweeps = sorted(glob.glob("runs/s-*"), key=os.path.getmtime)
values = {"RUN": run, "LEASE": lease, "A": ids[0], "B": ids[1], "C": ids[2],
          "SWEEP": os.path.basename(sweeps[-1]) if sweeps else ""}
print(" ".join(f"{k}={v}" for k, v in values.items()))
"""


@dataclass(frozen=True)
class Block:
    page: str            # docs/runs.md
    line: int            # of the opening fence
    lang: str
    text: str
    not_run: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for path in PAGES:
        page = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(page):
            lang, body = m.group(1), m.group(2)
            if lang not in SHELL or not re.search(r"^(\$ )?fleet ", body, re.M):
                continue
            above = page[:m.start()].rstrip("\n").splitlines()
            marker = NOT_RUN.search(above[-1]) if above else None
            reason = marker.group(1) if marker else None
            if path.name == "README.md" and above and above[-1] == "## A short tour":
                reason = "README's tour: tests/e2e/test_readme_tour.py runs it"
            found.append(Block(str(path.relative_to(REPO)), page[:m.start()].count("\n") + 1, lang, body, reason))
    return found


def script(block: Block, ids_py: Path) -> str:
    """The block as bash: comments after commands dropped, placeholders filled just before use."""
    lines = ["set -euo pipefail"]
    for line in block.text.splitlines():
        if block.lang == "console":
            if not line.startswith("$ "):
                continue                                # a transcript's output
            line = line[2:]
        if line.startswith("fleet "):
            line = re.sub(r"\s+#\s.*$", "", line)
            used = [p for p in PLACEHOLDERS if re.search(rf"\b{p}\b", line)]
            if used:
                lines.append(f'eval "$({sys.executable} {ids_py})"')
                for p in used:
                    lines.append(f'[ -n "${p}" ] || {{ echo "no {p} to fill in" >&2; exit 99; }}')
                    line = re.sub(rf"\b{p}\b", f'"${p}"', line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI") and not k.startswith(("GITHUB_", "AWS_", "FLEET_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", FLEET_HOME=str(home),
               FLEET_USER="docs", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    return env


def sh(command: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def build_project(root: Path) -> tuple[Path, Path]:
    """The project the docs assume, with its history (see the module's docstring)."""
    project, home = root / "project", root / "home"
    project.mkdir(parents=True)
    env = environment(home)
    (project / "train.py").write_text(TRAIN)
    for name, text in (("a.txt", "alpha\n"), ("b.txt", "beta\n")):
        (root / "train-v2" / name).parent.mkdir(exist_ok=True)
        (root / "train-v2" / name).write_text(text)
        (project / "data" / "train").mkdir(parents=True, exist_ok=True)
        (project / "data" / "train" / name).write_text(text.upper())
    shutil.copytree(REPO / "examples", project / "examples",
                    ignore=shutil.ignore_patterns("runs", "__pycache__", "*.pyc"))
    setup = sh("set -eux\ngit init -q\nfleet init\ngit add -A\ngit commit -qm project\n"
               f"fleet snapshot create {root / 'train-v2'} --name train-v2\n"
               "fleet sweep --param lr=0.1,0.2 -- python train.py --lr {lr}\n"
               "fleet up\n", project, env, timeout=180)
    assert setup.returncode == 0, (setup.stdout + setup.stderr)[-4000:]
    return project, home


def _copyable(directory: str, names: list[str]) -> list[str]:
    """Leave out sockets and other special files (a copy of a state with no live machine needs none)."""
    return [n for n in names if not (os.path.isdir(os.path.join(directory, n)) or os.path.isfile(os.path.join(
        directory, n)) or os.path.islink(os.path.join(directory, n)))]


def run_block(block: Block, template: tuple[Path, Path], where: Path, ids_py: Path) -> tuple[int, str, float]:
    project, home = where / "project", where / "home"
    shutil.copytree(template[0], project, symlinks=True, ignore=_copyable)
    shutil.copytree(template[1], home, symlinks=True, ignore=_copyable)
    env = environment(home)
    started = time.monotonic()
    try:
        done = sh(script(block, ids_py), project, env, timeout=BLOCK_TIMEOUT_S)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = 124, f"timed out after {BLOCK_TIMEOUT_S}s\n{exc.stdout or ''}{exc.stderr or ''}"
    finally:
        sh("fleet down --all >/dev/null 2>&1 || true", project, env)       # whatever the block left
    return code, out, time.monotonic() - started


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, float]]:
    root = tmp_path_factory.mktemp("docs-commands")
    ids_py = root / "ids.py"
    ids_py.write_text(IDS)
    runnable = [b for b in blocks() if b.not_run is None]
    try:
        template = build_project(root / "template")
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {b.id: pool.submit(run_block, b, template, root / f"block-{n}", ids_py)
                       for n, b in enumerate(runnable)}
            yield {key: future.result() for key, future in futures.items()}
    finally:
        # detached runs' supervisors end on their own once their run is recorded
        assert wait_until(lambda: processes_under(root) == [], timeout=90), processes_under(root)


def test_the_pages_have_runnable_blocks_and_every_other_says_why():
    found = blocks()
    assert len([b for b in found if b.not_run is None]) >= 10, [b.id for b in found]
    assert {b.page for b in found if b.not_run is None} >= {"docs/runs.md", "docs/snapshots.md",
                                                            "docs/managed-runs.md", "docs/sweeps.md", "README.md"}
    for b in found:
        assert b.not_run is None or len(b.not_run) > 10, f"{b.id}: say why it cannot run here"


@pytest.mark.parametrize("block", blocks(), ids=lambda b: b.id)
def test_docs_block_runs_as_written(block, outcomes):
    if block.not_run is not None:
        pytest.skip(f"{block.id} not-run: {block.not_run}")
    code, out, seconds = outcomes[block.id]
    assert code == 0, f"{block.id} exited {code} after {seconds:.1f}s:\n{block.text}\n---\n{out[-4000:]}"
