"""A moto server on loopback that counts every AWS API call it answers, whoever makes it.

Counting at the server sees every client of every process (the bench's own, fleet's in-process
clients, a `fleet status` child process), retries included — not one botocore client's events.
Each signed request is counted as (service, action): the service from the SigV4 credential
scope, the action from the query-protocol `Action=` parameter (EC2, IAM, STS) or the JSON
protocol's X-Amz-Target header (others: their method and path).
"""
from __future__ import annotations

import io
import logging
import os
import re
import socket
import threading
import urllib.request
from collections import Counter
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import parse_qs

_SCOPE = re.compile(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request")


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter(self.calls)

    def total(self, service: str | None = None) -> int:
        with self.lock:
            return sum(n for (svc, _), n in self.calls.items() if service is None or svc == service)

    def wrap(self, app):
        def counting_app(environ, start_response):
            auth = environ.get("HTTP_AUTHORIZATION", "")
            scope = _SCOPE.search(auth)
            if scope:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = environ["wsgi.input"].read(length) if length else b""
                environ["wsgi.input"] = io.BytesIO(body)
                action = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
                if not action:
                    query = parse_qs(environ.get("QUERY_STRING", ""))
                    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
                        query.update(parse_qs(body.decode(errors="replace")))
                    action = (query.get("Action") or [f"{environ.get('REQUEST_METHOD')} "
                                                      f"{environ.get('PATH_INFO', '')[:40]}"])[0]
                with self.lock:
                    self.calls[(scope.group(1), action)] += 1
            return app(environ, start_response)
        return counting_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def counting_moto() -> Iterator[tuple[str, CallCounter]]:
    """(endpoint URL, counter) of a fresh moto server on 127.0.0.1; this process's environment
    points boto3 at it with fake credentials while inside (restored after)."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server
    try:
        from moto.moto_server.threaded_moto_server import MotoRequestHandler  # type: ignore[attr-defined]
    except ImportError:
        MotoRequestHandler = None  # noqa: N806 — older moto: werkzeug's default handler

    logging.getLogger("werkzeug").setLevel(logging.ERROR)       # no per-request log lines
    counter = CallCounter()

    class CountingServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = counter.wrap(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True,
                                       **({"request_handler": MotoRequestHandler} if MotoRequestHandler else {}))
            self._server_ready_event.set()
            self._server.serve_forever()

    port = _free_port()
    server = CountingServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(aws_env(endpoint))
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield endpoint, counter
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
           "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED", "AWS_PROFILE")


def aws_env(endpoint: str) -> dict[str, str]:
    """boto3 → the moto server with fake credentials; never the real account or IMDS."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_SESSION_TOKEN": "bench", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def reset(endpoint: str) -> None:
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=30).close()
