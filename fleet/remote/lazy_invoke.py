"""Called before paramiko is imported: makes its `import invoke` cost nothing until invoke is used.

paramiko.config imports invoke at module import for one thing only: running the commands of
`Match exec` lines in an SSH config. invoke (with its vendored yaml and unittest.mock) is ~40 ms
of the ~60 ms paramiko takes to import, paid by every command that opens an SSH connection, on
the path of `fleet up` to the command's first line. A stand-in module takes its place in
sys.modules; the first attribute paramiko asks of it (`invoke.run`, for a `Match exec` line)
imports the real invoke, which then replaces it, so nothing paramiko does changes.
(importlib's LazyLoader does not do here: the import system reads `__spec__` of a module found in
sys.modules, which makes a LazyLoader module load at once.)
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class _Deferred(types.ModuleType):
    def __getattr__(self, name: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def defer_invoke(name: str = "invoke") -> None:
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None:
        return    # not installed: paramiko's own ImportError handling applies
    stand_in = _Deferred(name)
    stand_in.__spec__ = spec
    sys.modules[name] = stand_in

