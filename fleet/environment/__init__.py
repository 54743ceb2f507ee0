"""The run's environment: captured per machine kind (capture.py, probe.py on the machine), typed
(model.py), compared (diff.py) and pinned again on rerun (pin.py). See docs/environment.md."""
from .model import GpuInfo, ImageRef, LockFile, MachineEnvironment, Package, PinnedEnvironment, RunEnvironment

__all__ = ["GpuInfo", "ImageRef", "LockFile", "MachineEnvironment", "Package", "PinnedEnvironment", "RunEnvironment"]
