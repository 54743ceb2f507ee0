"""The on-machine agent. `agent.py` is copied verbatim onto machines: stdlib only, no fleet imports."""
from pathlib import Path

AGENT_PATH = Path(__file__).with_name("agent.py")


def agent_source() -> str:
    return AGENT_PATH.read_text()
