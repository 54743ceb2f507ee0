"""boto3 sessions that share what botocore reads from disk.

Every new boto3 Session builds its own botocore data loader, so each one parses the service models
again (EC2's is megabytes of JSON: 0.12-0.25 s of CPU) and the endpoint list (another ~0.15 s for a
region check). A `fleet` command that makes several clients, a supervisor, or a test process making
hundreds paid that each time. Sessions made here share one loader: the models are read once per
process. Credentials, profiles and regions stay per session (they can change between sessions: a
refreshed SSO login, another AWS_PROFILE), since only the loader, which holds no credentials, is shared.
"""
from __future__ import annotations

import threading
from typing import Any

_loader: Any = None
_lock = threading.Lock()


def new_session(**kwargs: Any) -> Any:
    """boto3.session.Session(**kwargs), reading service models through the process's shared loader."""
    import boto3.session
    import botocore.session
    global _loader
    core = botocore.session.get_session()
    with _lock:
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)
        session = boto3.session.Session(botocore_session=core, **kwargs)
        # boto3 appends its own data directory to the loader's search paths for every session it makes:
        # on a shared loader the list would grow by one per session, and every lookup walks it.
        paths = _loader.search_paths
        paths[:] = list(dict.fromkeys(paths))
    return session
