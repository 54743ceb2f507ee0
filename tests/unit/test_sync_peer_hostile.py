"""Peer forwarding against a hostile network: a seed that lies about lengths or answers a byte at a
time must not exhaust a fetching machine's memory or hold its sync; a stranger that trickles bytes or
opens many connections must not hold the seed's slots from the lease's own machines; a planted cache
entry (a link, a FIFO, a huge file) must not hang or bloat the seed."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

import fleet.snapshots.remote_peer as remote_peer
from fleet.snapshots.remote_cache import Cache
from fleet.snapshots.remote_peer import fetch_peer, read_unverified
from fleet.snapshots.sync_peers import _per_address, one_off_tls
from tests.unit.test_sync_peer_serving import _fresh, serving


class LyingSeed:
    """A TLS server holding the sync's certificate (as a seed does) that answers every request with
    `answer(hashes)`: bytes, or a generator of (delay, bytes) to trickle them."""

    def __init__(self, answer):
        self.cert, key = one_off_tls()
        self.ctx = remote_peer._tls_server_context(self.cert, key)
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def offer(self):
        return {"host": "127.0.0.1", "port": self.port, "cert": self.cert, "token": "t"}

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, raw):
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                got = b""
                while b"\r\n\r\n" not in got:
                    more = conn.recv(65536)
                    if not more:
                        return             # a worker with nothing left to ask closed at once
                    got += more
                head, _, body = got.partition(b"\r\n\r\n")
                length = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length"))
                             .split(b":")[1])
                while len(body) < length:
                    more = conn.recv(65536)
                    if not more:
                        return
                    body += more
                out = self.answer(body.decode().split())
                for delay, data in ([(0, out)] if isinstance(out, bytes) else out):
                    if self.stop.wait(delay):
                        return
                    conn.sendall(data)
                    self.sent += len(data)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.fixture
def lying():
    made = []

    def make(answer):
        made.append(LyingSeed(answer))
        return made[-1]
    yield make
    for s in made:
        s.close()


def _hashes(n=3):
    return [hashlib.sha256(b"%d" % i).hexdigest() for i in range(n)]


def test_a_negative_frame_length_does_not_make_the_fetcher_read_without_end(lying, tmp_path):
    junk = b"\0" * (1 << 20)

    def answer(hashes):
        frame = hashes[0].encode() + b"-00000000001\n"
        yield 0, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + frame
        for _ in range(64):                # 64 MiB more, if the fetcher keeps reading
            yield 0, junk
    seed = lying(answer)
    missed, fetched, why = fetch_peer(seed.offer(), _hashes(), _fresh(tmp_path))
    assert missed == _hashes() and fetched == 0
    assert "frame length" in why, why


def test_an_answer_without_a_length_is_refused(lying, tmp_path):
    def answer(hashes):
        frame = hashes[0].encode() + b"000999999999\n"
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n" + frame + b"\0" * 60000
    seed = lying(answer)
    missed, fetched, why = fetch_peer(seed.offer(), _hashes(), _fresh(tmp_path))
    assert missed == _hashes() and fetched == 0 and "no length" in why, why


def test_a_seed_that_answers_a_byte_at_a_time_is_given_up_on(lying, tmp_path, monkeypatch):
    monkeypatch.setattr(remote_peer, "PEER_BATCH_S", 2)
    monkeypatch.setattr(remote_peer, "PEER_CHUNK_S", 0.1)

    def answer(hashes):
        yield 0, b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
        for _ in range(5000):
            yield 0.5, b"0"                # each read gets a byte well within PEER_READ_S
    seed = lying(answer)
    t0 = time.monotonic()
    missed, fetched, why = fetch_peer(seed.offer(), _hashes(), _fresh(tmp_path))
    assert time.monotonic() - t0 < 10, "the fetcher waited on the trickling seed past its deadline"
    assert missed == _hashes() and fetched == 0 and why


def _trickle(port, seconds):
    """A stranger: connects and sends a byte of a would-be handshake every 0.3 s. How long the seed kept it."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        while time.monotonic() - t0 < seconds:
            try:
                s.sendall(b"\x16")
                s.settimeout(0.3)
                if s.recv(1) == b"":
                    break
            except socket.timeout:
                continue
            except OSError:
                break
    return time.monotonic() - t0


def test_a_stranger_trickling_its_handshake_is_cut_at_the_head_limit(tmp_path, monkeypatch):
    """The idle limit (15 s a read) alone let a byte every 14 s hold a slot for the seed's hour."""
    monkeypatch.setattr(remote_peer, "SERVE_HEAD_S", 1)
    with serving(tmp_path) as (offer, chunks):
        held = _trickle(offer["port"], 8)
        assert held < 4, f"a trickling stranger held a connection for {held:.1f} s"
        missed, fetched, why = fetch_peer(offer, list(chunks), _fresh(tmp_path))
        assert missed == [], why


def test_one_address_cannot_take_every_slot(tmp_path):
    """A flood from one address (another tenant behind an allowed IP) gets its share; the seed keeps
    answering the rest, and what the flooder's extra connections see is an immediate close."""
    with serving(tmp_path, per_address=4) as (offer, chunks):
        held = [socket.create_connection(("127.0.0.1", offer["port"]), timeout=5) for _ in range(4)]
        try:
            extra = socket.create_connection(("127.0.0.1", offer["port"]), timeout=5)
            extra.settimeout(5)
            assert extra.recv(1) == b"", "a fifth connection from one address was kept"
            extra.close()
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        missed, fetched, why = fetch_peer(offer, list(chunks), _fresh(tmp_path))
        assert missed == [], why


def test_a_seed_closed_at_once_is_not_taken_for_unreachable(tmp_path):
    """A full (or flooded) seed closes at accept: that is not a seed nobody can reach, which would
    stop every sync for 6 h from trying it."""
    with serving(tmp_path, allow=["10.9.9.9"]) as (offer, chunks):
        missed, fetched, why = fetch_peer(offer, list(chunks), _fresh(tmp_path))
    assert fetched == 0 and not why.startswith("unreachable"), why


def test_the_controller_sizes_each_addresss_share_by_the_machines_behind_it():
    assert _per_address(["10.0.0.2", "10.0.0.3"]) == remote_peer.PEER_WORKERS
    assert _per_address(["127.0.0.1"] * 7) == 7 * remote_peer.PEER_WORKERS      # one host's machines
    assert _per_address(["node-a", "node-b", "node-c"]) == 3 * remote_peer.PEER_WORKERS   # names: unknown
    assert _per_address(["::1", "0:0::1"]) == 2 * remote_peer.PEER_WORKERS       # one address, two spellings


def test_the_servers_header_bounds_do_not_outlive_it(tmp_path):
    import http.client
    before = http.client._MAXHEADERS, http.client._MAXLINE
    with serving(tmp_path) as (offer, chunks):
        assert fetch_peer(offer, list(chunks)[:2], _fresh(tmp_path))[0] == []
    assert (http.client._MAXHEADERS, http.client._MAXLINE) == before


def test_a_planted_cache_entry_is_never_followed_or_read_whole(tmp_path, monkeypatch):
    cache = Cache(str(tmp_path / "c"), None)
    link, fifo, huge = (hashlib.sha256(b"%d" % i).hexdigest() for i in range(3))
    os.makedirs(os.path.dirname(cache.path(link)), exist_ok=True)
    target = tmp_path / "secret"
    target.write_bytes(b"not a chunk")
    os.symlink(target, cache.path(link))
    os.makedirs(os.path.dirname(cache.path(fifo)), exist_ok=True)
    os.mkfifo(cache.path(fifo))
    os.makedirs(os.path.dirname(cache.path(huge)), exist_ok=True)
    with open(cache.path(huge), "wb") as f:
        f.truncate(8 << 20)
    monkeypatch.setattr(remote_peer, "MAX_BODY", 4 << 20)
    with pytest.raises(OSError):
        read_unverified(cache, link)       # O_NOFOLLOW: the handler answers "absent"
    t0 = time.monotonic()
    assert read_unverified(cache, fifo) is None and time.monotonic() - t0 < 2
    assert read_unverified(cache, huge) is None
