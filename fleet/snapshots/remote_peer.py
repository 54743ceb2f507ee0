"""Peer forwarding, the machine side (stdlib only; part of the sync helper, ahead of remote_helper.py).

A host whose cache holds a lease's chunks (the seed: the first host fed) serves them to the lease's
machines on other hosts, so the controller's link carries each chunk once, not once per host.

Serving: a sync channel whose request is {"serve": {"cache", "cert", "key", "token", "bind",
"allow", "snapshots", "deadline_s"}} listens with TLS on an ephemeral port of `bind` (the address the lease's
other machines reach this one at), answers {"port"}, then answers requests carrying the token
(POST /chunks, chunk ids one per line) with frames "<id><12 digit length>\\n<bytes>" of the chunks
as its cache holds them (the fetcher verifies them), and only the chunks of `snapshots` (the ids this sync
carries, whose manifests the seed's cache holds): the token opens this sync's data, not everything
the host's cache keeps for other leases of the same user. Connections from addresses not in `allow` are
closed before any TLS. It stops when the channel's input ends (the controller
closed it, or the controller and so its ssh are gone) or at its deadline. The certificate and key
are made by the controller for this one sync; the key crosses the SSH channel only and is loaded
through an anonymous memory file. A fetching machine pins that certificate (no name check, no other
authority) and sends the token, so only the lease's own machines read chunks, and nobody on the
network sees them.

Fetching: `fetch_peer` pulls the chunks a machine is missing over a few keep-alive connections,
each verified on arrival and kept in the host cache like a chunk the controller pushed. A chunk the
seed lacks (or holds corrupt) is pushed by the controller afterwards; a seed that cannot be reached
at all (a firewall, another network) costs one connection timeout, then everything comes through SSH.
"""
import hashlib
import hmac
import os

if "Cache" not in globals():   # inline, remote_cache.py comes first
    from fleet.snapshots.remote_cache import Cache, Failure, is_sha256  # noqa: F401

PEER_CONNECT_S = 5             # a seed that does not answer within this is not reachable from here
PEER_READ_S = 60
PEER_WORKERS = 4
SERVE_IDLE_S = 15              # a connection that sends no request (or no handshake) for this long is closed
SERVE_HEAD_S = 10              # from accept to an authenticated request: a trickling stranger holds no slot longer
PEER_BATCH_S = 120             # one answer (at most SERVE_BATCH + a chunk) must arrive within this, whole
PEER_CHUNK_S = 0.25            # and the whole fetch within PEER_BATCH_S + this per chunk (1 MB/s at 256 KiB chunks)
HEADERS_MAX, HEADER_LINE_MAX = 16, 8192   # a request's head, far under http.client's 100 x 64 KiB
SERVE_CONNECTIONS = 64         # at once; more are closed at accept (a flood, not the lease's machines)
MAX_BODY = 64 * 1024 * 1024    # no chunk of any store format is larger
ASK_IDS = 64                   # chunk ids per request
ASK_MAX = ASK_IDS * 80         # bytes of ids a request may carry
SERVE_BATCH = 4 * 1024 * 1024  # bytes per answer (then the fetcher asks again): bounds the seed's memory
ABSENT = b"9" * 12             # a frame's length field for a chunk the seed does not hold (no bytes follow)
SLICE = 256 * 1024             # bytes per write of an answer


def _tls_server_context(cert, key):
    """The server's context; the key goes through an anonymous memory file where Linux has one
    (never on a disk), else a 0600 temporary file removed as soon as it is loaded."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        fd = os.memfd_create("fleet-peer")
        path = "/proc/self/fd/%d" % fd
    except (AttributeError, OSError):
        import tempfile
        fd, path = tempfile.mkstemp(prefix=".fleet-peer-")   # 0600, O_EXCL: only this user reads it
    try:
        os.write(fd, (cert + key).encode())
        ctx.load_cert_chain(path)
    finally:
        os.close(fd)
        if not path.startswith("/proc/"):
            os.unlink(path)
    return ctx


def read_unverified(cache, h):
    """A chunk's bytes as the cache holds them, or None. Not hashed here: the fetching machine hashes
    every chunk it receives (a bad one is then pushed by the controller), and hashing each chunk again
    for every host served would double the seed's CPU per host."""
    import stat
    loc = cache.locate(h)
    if loc is None:
        return None
    path, off, n = loc
    # Never through a link, never a FIFO or device, never more than a chunk's bound: what a peer can
    # make the seed read into memory is one chunk per connection, whatever the cache holds.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        size = st.st_size - off if n is None else n
        if not stat.S_ISREG(st.st_mode) or not 0 <= size <= MAX_BODY or off < 0:
            return None
        if off:
            f.seek(off)
        return f.read(size)


def chunks_of(cache, sids):
    """Every chunk id of the snapshots `sids`, from the manifests in `cache` (each verified against its
    id); Failure when one is absent: then nothing is served and the controller pushes everything."""
    served = set()
    for sid in sids:
        body = cache.load_manifest(sid)
        if body is None:
            raise Failure("this host's cache does not hold the manifest of snapshot %s; not serving" % sid)
        for e in body.get("entries", ()):
            for h, _n in e.get("chunks") or ():
                if is_sha256(h):
                    served.add(h)
    return served


def serve_chunks(req, stream, answer):
    """Serve the cache's chunks to `req["allow"]` (the lease's machines' addresses) until `stream`
    ends or `req["deadline_s"]` passes; `answer` sends one JSON line to the controller."""
    import http.client
    import socket
    import socketserver
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    # The header parser's bounds are module globals: strict while this serves (the helper serves
    # only), put back after (a caller in a process that does more).
    limits = http.client._MAXHEADERS, http.client._MAXLINE
    http.client._MAXHEADERS, http.client._MAXLINE = HEADERS_MAX, HEADER_LINE_MAX
    cache = Cache(req["cache"], None)      # a shared lock: no other sync trims the cache while it serves
    try:
        served = chunks_of(cache, req["snapshots"])
    except Exception:
        os.close(cache.lock_fd)
        raise
    token = ("Bearer " + req["token"]).encode()
    allow = set(req.get("allow") or ())
    per_address = int(req.get("per_address") or SERVE_CONNECTIONS)
    slots = threading.BoundedSemaphore(SERVE_CONNECTIONS)
    held, held_lock = {}, threading.Lock()

    def release(ip):
        with held_lock:
            held[ip] -= 1
            if not held[ip]:
                del held[ip]               # without an allow-list, addresses seen must not pile up
        slots.release()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"      # keep-alive: one TLS handshake per fetching connection
        timeout = SERVE_IDLE_S

        def setup(self):
            BaseHTTPRequestHandler.setup(self)
            # The idle timeout bounds each read, not a handshake or head sent a byte at a time.
            self.head_timer = threading.Timer(SERVE_HEAD_S, _cut, (self.connection,))
            self.head_timer.daemon = True
            self.head_timer.start()

        def finish(self):
            self.head_timer.cancel()
            BaseHTTPRequestHandler.finish(self)

        def log_message(self, *args):     # stderr is the controller's channel: nothing to say there
            pass

        def do_POST(self):  # noqa: N802 — http.server's name
            """POST /chunks with chunk ids, one per line: frames for as many of them, in order, as
            fit in SERVE_BATCH bytes (at least one); the fetcher asks again for the rest."""
            if not hmac.compare_digest(self.headers.get("Authorization", "").encode(), token):
                return self.reply(403)
            self.head_timer.cancel()        # one of the lease's machines: the idle timeout is enough
            n = int(self.headers.get("Content-Length") or 0)
            if self.path != "/chunks" or not 0 < n <= ASK_MAX:
                return self.reply(400)
            frames, size = [], 0
            for h in self.rfile.read(n).decode("ascii", "replace").split():
                try:
                    data = read_unverified(cache, h) if h in served else None
                except OSError:
                    data = None
                frames += [b"%s%012d\n" % (h.encode(), len(data)), data] if data is not None else \
                    [b"%s%s\n" % (h.encode()[:64].ljust(64, b"-"), ABSENT)]
                size += len(data or b"")
                if size >= SERVE_BATCH:
                    break
            self.reply(200, frames)

        def reply(self, code, parts=()):
            """Written in slices of up to SLICE bytes, small parts gathered: the head alone and then
            each small frame would meet Nagle and the peer's delayed ACK (40 ms a write), and one
            large write must finish within the connection's idle timeout (a slow link's answer)."""
            if code != 200:
                self.close_connection = True    # a body it did not read must not be taken for a request
            head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n" % (
                code, self.responses.get(code, ("",))[0].encode(), sum(map(len, parts)))
            pending, size = [], 0
            for part in (head, *parts):
                view = memoryview(part)
                while len(view):
                    take = view[:SLICE - size]
                    pending.append(take)
                    size += len(take)
                    view = view[len(take):]
                    if size >= SLICE:
                        self.wfile.write(b"".join(pending))
                        pending, size = [], 0
            if pending:
                self.wfile.write(b"".join(pending))

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128
        address_family = socket.AF_INET6 if ":" in req["bind"] else socket.AF_INET

        def server_bind(self):             # HTTPServer's would look the address up in DNS
            socketserver.TCPServer.server_bind(self)

        def get_request(self):
            conn, addr = self.socket.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return conn, addr

        def verify_request(self, request, client_address):
            # Not one of the lease's machines, or too many at once (from one address): closed before any TLS.
            ip = client_address[0]
            if allow and ip not in allow:
                return False
            with held_lock:
                if held.get(ip, 0) >= per_address or not slots.acquire(blocking=False):
                    return False
                held[ip] = held.get(ip, 0) + 1
            return True

        def process_request(self, request, client_address):
            try:
                ThreadingHTTPServer.process_request(self, request, client_address)
            except Exception:              # no thread to start: the slot is given back here
                release(client_address[0])
                raise

        def process_request_thread(self, request, client_address):
            try:
                ThreadingHTTPServer.process_request_thread(self, request, client_address)
            finally:
                release(client_address[0])

        def handle_error(self, request, client_address):
            pass                           # a scanner's reset or a bad handshake: nothing to tell anyone

    ctx = _tls_server_context(req["cert"], req["key"])
    server = Server((req["bind"], 0), Handler)
    # The handshake happens in the request's thread, not in accept(): a client that stalls it holds
    # one of the slots for SERVE_IDLE_S, never the listener.
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answer({"port": server.server_address[1]})
    ended = threading.Event()

    def wait_for_the_end():               # the controller sends nothing more: its channel's end is the signal
        try:
            while stream.read(1 << 16):
                pass
        finally:
            ended.set()
    threading.Thread(target=wait_for_the_end, daemon=True).start()
    try:
        # Also a deadline: a controller whose link died without a FIN would otherwise leave this
        # serving (and the cache's lock held) until TCP gives up, hours later.
        ended.wait(max(1.0, float(req.get("deadline_s") or 3600)))
    finally:
        server.shutdown()
        server.server_close()
        os.close(cache.lock_fd)
        http.client._MAXHEADERS, http.client._MAXLINE = limits


def _cut(sock):
    """End a connection from another thread: its blocked read returns at once."""
    import socket
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _unreachable(exc):
    """Whether a failure to connect says the seed cannot be reached from here (nothing answers, or
    nothing listens), as opposed to a seed that answered and then closed (full, or flooded)."""
    import errno
    import socket
    return isinstance(exc, (ConnectionRefusedError, socket.timeout, TimeoutError, socket.gaierror)) or \
        getattr(exc, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH)


def _frame_length(head):
    """A frame's length field, or None for a chunk the seed lacks; ValueError for anything but
    12 digits within a chunk's bound (a sign, spaces, a length meant to exhaust memory)."""
    field = head[64:76]
    if field == ABSENT:
        return None
    if not field.isdigit() or int(field) > MAX_BODY:
        raise ValueError("the peer's frame length %r is not a chunk's" % field)
    return int(field)


def fetch_peer(peer, hashes, cache):
    """Pull `hashes` from the seed; return (not fetched, bytes fetched, why the first failure)."""
    import http.client
    import socket
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
    import time
    todo, got, lock = list(reversed(hashes)), set(), threading.Lock()
    state = {"bytes": 0, "why": None, "cut": False, "reached": False}
    # A seed that answers, but a byte a minute, must not hold this machine (and its sync) for ever.
    deadline = time.monotonic() + PEER_BATCH_S + PEER_CHUNK_S * len(hashes)

    def failure(text, cut=False):
        with lock:
            state["why"] = state["why"] or text
            state["cut"] = state["cut"] or cut

    def worker():
        conn = http.client.HTTPSConnection(peer["host"], peer["port"], context=ctx, timeout=PEER_CONNECT_S)
        connected = False
        try:
            conn.connect()
            connected = state["reached"] = True
            conn.sock.settimeout(PEER_READ_S)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                left = deadline - time.monotonic()
                with lock:
                    if not todo or state["cut"]:
                        return
                    if left <= 0:
                        raise TimeoutError("the peer was too slow: the rest comes from the controller")
                    batch = [todo.pop() for _ in range(min(ASK_IDS, len(todo)))]
                timer = threading.Timer(min(PEER_BATCH_S, left), _cut, (conn.sock,))
                timer.daemon = True
                timer.start()
                try:
                    served = ask(conn, batch)
                finally:
                    timer.cancel()
                with lock:
                    todo.extend(reversed(batch[served:]))
        except Exception as exc:  # noqa: BLE001 — whatever stops a connection, SSH delivers the rest
            # A seed nobody reaches stops every worker; one connection's failure (a reset, a timeout, a
            # seed full or flooded that closed it at once while others got through) only its own.
            unreachable = not connected and not state["reached"] and _unreachable(exc)
            failure("%s%s: %s" % ("unreachable: " if unreachable else "", type(exc).__name__, exc), cut=unreachable)
        finally:
            conn.close()

    def ask(conn, batch):
        """One request: how many of `batch`, from its start, the answer covered."""
        conn.request("POST", "/chunks", body="\n".join(batch).encode(), headers=headers)
        r = conn.getresponse()
        if r.length is None or r.chunked or r.length > SERVE_BATCH + MAX_BODY + ASK_IDS * 77:
            raise ValueError("the peer's answer has no length, or offered %s bytes for one batch" % r.length)
        if r.status != 200:
            failure("the peer answered %d" % r.status, cut=r.status == 403)
            raise ValueError("the peer answered %d" % r.status)   # its body unread: this connection ends
        served = 0
        for h in batch:
            head = r.read(77)
            if not head:
                break                  # a prefix was served: the rest are asked for again
            if len(head) != 77 or head[:64] != h.encode():
                raise ValueError("the peer's answer is not the frames asked for")
            served += 1
            size = _frame_length(head)
            if size is None:
                failure("the peer lacks chunk %s" % h[:12])
                continue
            data = r.read(size)
            if len(data) != size:
                raise ValueError("the peer's answer ended early")
            if hashlib.sha256(data).hexdigest() != h:
                failure("chunk %s: the peer sent corrupt bytes" % h[:12])
                continue
            with lock:
                cache.put(h, data)
                got.add(h)
                state["bytes"] += len(data)
        if not served:
            raise ValueError("the peer served nothing of what was asked")
        return served

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(PEER_WORKERS, len(todo)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [h for h in hashes if h not in got], state["bytes"], state["why"]
