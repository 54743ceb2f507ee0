"""The fleet Pulumi program (`pulumi up` in the repository root runs this, see Pulumi.yaml).

Thin on purpose: validate the stack config (one-line errors, before any resource is declared),
compose the components, export the single `fleet` output that `fleet.providers.aws.outputs` reads.
"""
import sys
from pathlib import Path

# Pulumi runs this file by path, so the repository root (holding `stacks` and `fleet`) may not be on
# sys.path yet; with `fleet` installed in the venv this only matters for `stacks` itself.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pulumi  # noqa: E402

from fleet.providers.aws.outputs import OUTPUT_KEY  # noqa: E402
from stacks.config import StackConfigError, load_stack_config  # noqa: E402
from stacks.program import build  # noqa: E402

try:
    config = load_stack_config()
except StackConfigError as exc:
    raise pulumi.RunError(f"stack config: {exc.one_line()}") from None

pulumi.export(OUTPUT_KEY, build(config).outputs)
