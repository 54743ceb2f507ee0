"""Peer forwarding, the machine side (stdlib only; part of the sync helper, ahead of remote_helper.py).

A host whose cache holds a lease's chunks (the seed: the first host fed) serves them to the lease's
machines on other hosts, so the controller's link carries each chunk once, not once per host.

Serving: a sync channel whose request is {"serve": {"cache", "cert", "key", "token", "bind"}}
listens with TLS on an ephemeral port of `bind` (the address the lease's other machines reach this
one at), answers {"port"}, and answers GET /chunk/<id> carrying the token with the chunk, read
from the cache and verified; it stops when the channel's input ends: the controller closed it, or
the controller (and so its ssh) is gone. The certificate and key are the controller's, made for
this one sync; the key crosses the SSH channel only and lives in a 0600 file for as long as it
takes to load it. A fetching machine pins that certificate (no name check, no other authority) and
sends the token, so only the lease's own machines read chunks, and nobody on the network sees them.

Fetching: `fetch_peer` pulls the chunks a machine is missing over a few keep-alive connections,
each verified on arrival and kept in the host cache like a chunk the controller pushed. A chunk the
seed lacks is simply pushed by the controller afterwards; a seed that cannot be reached at all
(a firewall, another network) costs one connection timeout, then everything comes through SSH.
"""
import hashlib
import hmac
import os

if "Cache" not in globals():   # inline, remote_cache.py comes first
    from fleet.snapshots.remote_cache import Cache, Failure, is_sha256  # noqa: F401

PEER_CONNECT_S = 5             # a seed that does not answer within this is not reachable from here
PEER_READ_S = 60
PEER_WORKERS = 4


def _tls_server_context(cert, key):
    import ssl
    import tempfile
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    fd, path = tempfile.mkstemp(prefix=".fleet-peer-")       # 0600, O_EXCL: only this user reads it
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cert + key)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


def serve_chunks(req, stream, answer):
    """Serve the cache's chunks until `stream` ends; `answer` sends one JSON line to the controller."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    cache = Cache(req["cache"], None)      # a shared lock: no other sync trims the cache while it serves
    token = ("Bearer " + req["token"]).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"      # keep-alive: one TLS handshake per fetching connection
        timeout = PEER_READ_S

        def log_message(self, *args):     # stderr is the controller's channel: nothing to say there
            pass

        def do_GET(self):  # noqa: N802 — http.server's name
            if not hmac.compare_digest(self.headers.get("Authorization", "").encode(), token):
                return self.reply(403, b"")
            h = self.path[len("/chunk/"):] if self.path.startswith("/chunk/") else ""
            try:
                body = cache.read(h, "peer request") if is_sha256(h) else None
            except (Failure, OSError):
                body = None
            self.reply(200, body) if body is not None else self.reply(404, b"")

        def reply(self, code, body):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in req["bind"] else socket.AF_INET

    ctx = _tls_server_context(req["cert"], req["key"])
    server = Server((req["bind"], 0), Handler)
    # The handshake happens in the request's thread, not in accept(): a client that stalls it holds
    # one thread, never the listener.
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answer({"port": server.server_address[1]})
    try:
        while stream.read(1 << 16):       # the controller sends nothing more: wait for the end
            pass
    finally:
        server.shutdown()
        server.server_close()
        os.close(cache.lock_fd)


def fetch_peer(peer, hashes, cache):
    """Pull `hashes` from the seed; return (not fetched, bytes fetched, why the first failure)."""
    import http.client
    import threading
    try:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False         # the one certificate below, whatever address it answers on
        ctx.load_verify_locations(cadata=peer["cert"])
        headers = {"Authorization": "Bearer " + peer["token"]}
    except Exception as exc:  # noqa: BLE001 — no ssl module, a bad offer: the controller pushes it all
        return list(hashes), 0, "%s: %s" % (type(exc).__name__, exc)
    todo, got, lock = list(reversed(hashes)), set(), threading.Lock()
    state = {"bytes": 0, "why": None, "cut": False}

    def failure(text, cut=False):
        with lock:
            state["why"] = state["why"] or text
            state["cut"] = state["cut"] or cut

    def worker():
        conn = http.client.HTTPSConnection(peer["host"], peer["port"], context=ctx, timeout=PEER_CONNECT_S)
        try:
            conn.connect()
            conn.sock.settimeout(PEER_READ_S)
            while True:
                with lock:
                    if not todo or state["cut"]:
                        return
                    h = todo.pop()
                conn.request("GET", "/chunk/" + h, headers=headers)
                r = conn.getresponse()
                data = r.read()
                if r.status != 200 or hashlib.sha256(data).hexdigest() != h:
                    failure("chunk %s: the peer answered %d%s" % (
                        h[:12], r.status, " with corrupt bytes" if r.status == 200 else ""), cut=r.status == 403)
                    continue
                with lock:
                    cache.put(h, data)
                    got.add(h)
                    state["bytes"] += len(data)
        except Exception as exc:  # noqa: BLE001 — whatever stops a connection, SSH delivers the rest
            failure("%s: %s" % (type(exc).__name__, exc), cut=True)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(PEER_WORKERS, len(todo)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [h for h in hashes if h not in got], state["bytes"], state["why"]
