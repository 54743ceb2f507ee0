"""Templates of the local provider. GPUs are simulated slots; the price is a shadow price: what
the nearest AWS machine would cost (on-demand, us-east-1), shown as "would cost"."""
from __future__ import annotations

from decimal import Decimal

from ...models import Template

_SOURCE = "shadow price: AWS on-demand us-east-1 list price of the nearest GPU instance (2026-11)"

LOCAL_TEMPLATES = {
    t.name: t for t in (
        Template("local-1gpu", "local", 1, "simulated", True, Decimal("1.006"), _SOURCE + " (g5.xlarge)",
                 description="one simulated GPU per machine"),
        Template("local-4gpu", "local", 4, "simulated", True, Decimal("5.672"), _SOURCE + " (g5.12xlarge)",
                 description="four simulated GPUs per machine"),
        Template("local-8gpu", "local", 8, "simulated", True, Decimal("16.288"), _SOURCE + " (g5.48xlarge)",
                 description="eight simulated GPUs per machine"),
    )
}
