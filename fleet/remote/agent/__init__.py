"""The on-machine agent. `agent.py` is copied verbatim onto machines: stdlib only, no fleet imports."""
from pathlib import Path

AGENT_PATH = Path(__file__).with_name("agent.py")
# Copied together onto every machine: the agent, the containment it imports, optional telemetry.
AGENT_FILES = tuple(AGENT_PATH.with_name(n) for n in ("agent.py", "containment.py", "telemetry.py"))


_IMPORT = """try:
    from . import containment
except ImportError:   # run as a script on a machine: containment.py is copied next to it
    import containment
"""


def agent_source() -> str:
    """agent.py as one self-contained file, containment.py embedded: for machines that receive a
    single file (AWS user data, image builders). Copying AGENT_FILES side by side works as well."""
    agent = AGENT_PATH.read_text()
    assert _IMPORT in agent, "agent.py's containment import changed: update agent_source()"
    embedded = AGENT_PATH.with_name("containment.py").read_text()
    shim = ("import types as _types\n\ncontainment = _types.ModuleType(\"containment\")\n"
            f"exec(compile({embedded!r}, \"containment.py\", \"exec\"), containment.__dict__)\n")
    return agent.replace(_IMPORT, shim)
