"""The name fleet is published under on the package index.

`fleet` there is an unrelated project, so the distribution is `fleet-gpu` (`pip install 'fleet-gpu[team]'`);
the command and the import package stay `fleet`. Install hints and `fleet --version` read it here.
"""
from __future__ import annotations

NAME = "fleet-gpu"


def version() -> str:
    """The installed distribution's version; the package's own when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version(NAME)
    except PackageNotFoundError:
        from . import __version__
        return __version__
