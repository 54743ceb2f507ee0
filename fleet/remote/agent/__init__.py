"""The on-machine agent. `agent.py` is copied verbatim onto machines: stdlib only, no fleet imports."""
from functools import lru_cache
from pathlib import Path

AGENT_PATH = Path(__file__).with_name("agent.py")
# Copied together onto every machine: the agent, the modules it imports, optional telemetry.
AGENT_FILES = tuple(AGENT_PATH.with_name(n) for n in ("agent.py", "containment.py", "agent_args.py",
                                                      "group.py", "wakes.py", "telemetry.py"))


_EMBEDDED = ("containment", "agent_args", "group", "wakes")   # the modules agent.py imports from beside itself
# agent.py's import of them, replaced by the modules themselves in the single-file agent.
_IMPORTS = ("if __package__:\n    from . import agent_args, containment, group, wakes\n"
            "else:   # run as a script on a machine: these modules are copied next to it\n"
            "    containment, agent_args, group, wakes = (_beside(\"containment\"), _beside(\"agent_args\"), "
            "_beside(\"group\"),\n                                             _beside(\"wakes\"))\n")


def compact(source: str) -> str:
    """The same program without its docstrings and comments (ast round trip): the single-file agent
    rides in EC2 user data, 16 KiB in all, and its prose is most of its size."""
    import ast
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


@lru_cache(maxsize=1)   # an ast round trip of ~40 KB: once per process, not once per lease or bake
def agent_source() -> str:
    """agent.py as one self-contained file, the modules it imports embedded where their imports stood,
    compacted: for machines that receive a single file (AWS user data, image builders, Slurm nodes).
    Copying AGENT_FILES side by side works as well."""
    agent = AGENT_PATH.read_text()
    assert _IMPORTS in agent, "agent.py's import of its modules changed: update agent_source()"
    shims = "import types as _types\n\n"
    for name in _EMBEDDED:
        embedded = compact(AGENT_PATH.with_name(f"{name}.py").read_text())
        shims += (f"{name} = _types.ModuleType({name!r})\n"
                  f"exec(compile({embedded!r}, {name + '.py'!r}, \"exec\"), {name}.__dict__)\n")
    return compact(agent.replace(_IMPORTS, shims))
