"""Templates of the local provider. GPUs are simulated slots of a declared type (A10G, 24 GB: the
GPU of the AWS machines whose prices they carry), so `--gpus A10G:8` is met and `--gpus A100:8` is
refused here exactly as on a provider without A100s. The price is a shadow price: what the nearest
AWS machine would cost (on-demand, us-east-1), shown as "would cost"."""
from __future__ import annotations

from decimal import Decimal

from ...models import Template

_SOURCE = "shadow price: AWS on-demand us-east-1 list price of the nearest GPU instance (2026-11)"
SIMULATED_GPU = "A10G"            # what g5 machines carry
SIMULATED_GPU_MEMORY_MIB = 24576

DEFAULT_TEMPLATE = "local-4gpu"


def _template(name: str, gpus: int, price: str, nearest: str, description: str) -> Template:
    return Template(name, "local", gpus, SIMULATED_GPU, True, Decimal(price), f"{_SOURCE} ({nearest})",
                    description=description, gpu_memory_mib=SIMULATED_GPU_MEMORY_MIB)


LOCAL_TEMPLATES = {
    t.name: t for t in (
        _template("local-1gpu", 1, "1.006", "g5.xlarge", "one simulated A10G per machine"),
        _template("local-4gpu", 4, "5.672", "g5.12xlarge", "four simulated A10Gs per machine"),
        _template("local-8gpu", 8, "16.288", "g5.48xlarge", "eight simulated A10Gs per machine"),
    )
}
