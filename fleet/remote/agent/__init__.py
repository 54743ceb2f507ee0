"""The on-machine agent. `agent.py` is copied verbatim onto machines: stdlib only, no fleet imports."""
from pathlib import Path

AGENT_PATH = Path(__file__).with_name("agent.py")
# Copied together onto every machine: the agent, the containment it imports, optional telemetry.
AGENT_FILES = tuple(AGENT_PATH.with_name(n) for n in ("agent.py", "containment.py", "telemetry.py"))


def agent_source() -> str:
    return AGENT_PATH.read_text()
