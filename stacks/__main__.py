"""The fleet Pulumi program (`pulumi up` in the repository root runs this, see Pulumi.yaml).

Thin on purpose: validate the stack config (one-line errors, before any resource is declared),
compose the components, export the single `fleet` output that `fleet.providers.aws.outputs` reads.

Two ways in: Pulumi runs this file by path from a checkout (`main: stacks/`), and an installed fleet
runs it as the module `fleet.stacks.__main__` (the wheel ships this directory as `fleet.stacks`).
"""
import sys
from pathlib import Path

if not __package__:
    # Run by path: the repository root (holding `stacks` and `fleet`) may not be on sys.path yet;
    # with `fleet` installed in the venv this only matters for `stacks` itself.
    _ROOT = str(Path(__file__).resolve().parent.parent)
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

import pulumi  # noqa: E402

from fleet.providers.aws.outputs import OUTPUT_KEY  # noqa: E402

if __package__:
    from .config import StackConfigError, load_stack_config
    from .program import build
else:
    from stacks.config import StackConfigError, load_stack_config
    from stacks.program import build

try:
    config = load_stack_config()
except StackConfigError as exc:
    raise pulumi.RunError(f"stack config: {exc.one_line()}") from None

pulumi.export(OUTPUT_KEY, build(config).outputs)
