"""The fleet Pulumi program: `Pulumi.yaml` runs `stacks/__main__.py`, which composes the components."""
