"""Peer forwarding, the machine side (fleet/snapshots/remote_peer.py): a seed host serves its cache's
chunks over TLS to holders of the sync's token and certificate only; a fetching machine keeps what
verifies and hands back everything else for the controller to push."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import zlib

import pytest

from fleet.snapshots.remote_cache import Cache
from fleet.snapshots.remote_peer import fetch_peer, serve_chunks
from fleet.snapshots.sync_peers import one_off_tls


def _manifest(cache, hashes):
    """A snapshot of one file per chunk kept in `cache` (as a sync leaves it on the seed); its id."""
    raw = json.dumps({"format": 3, "entries": [
        {"path": "f%d" % i, "type": "file", "chunks": [[h, 1]]} for i, h in enumerate(hashes)]},
        sort_keys=True, separators=(",", ":")).encode()
    sid = hashlib.sha256(raw).hexdigest()
    cache.save_manifest(sid, zlib.compress(raw))
    return sid


def _serve(tmp_path, sizes=None, others=0, **extra):
    """A seed serving a cache of 20 chunks, the chunks of one snapshot, on loopback (and holding
    `others` more of another snapshot): (offer, chunks, its thread, its input's write end)."""
    cache = Cache(str(tmp_path / "seed-cache"), None)
    chunks, other = {}, []
    for i, size in enumerate((sizes or [1000 + 97 * i for i in range(20)]) + [500] * others):
        data = os.urandom(size)
        h = hashlib.sha256(data).hexdigest()
        cache.put(h, data)
        if i < len(sizes or range(20)):
            chunks[h] = data
        else:
            other.append(h)
    extra.setdefault("snapshots", [_manifest(cache, list(chunks))])
    _manifest(cache, other)
    cache.finish()
    cert, key = one_off_tls()
    token = os.urandom(32).hex()
    r, w = os.pipe()
    answers = []
    t = threading.Thread(target=serve_chunks, args=(
        {"cache": str(tmp_path / "seed-cache"), "cert": cert, "key": key, "token": token, "bind": "127.0.0.1",
         **extra}, os.fdopen(r, "rb"), answers.append), daemon=True)
    t.start()
    for _ in range(200):
        if answers:
            break
        t.join(0.05)
    assert answers and answers[0]["port"] > 0
    return {"host": "127.0.0.1", "port": answers[0]["port"], "cert": cert, "token": token}, chunks, t, w


@contextlib.contextmanager
def serving(tmp_path, **kw):
    """(offer, chunks) of a seed that stops when the block ends, as when the controller closes its channel."""
    offer, chunks, t, w = _serve(tmp_path, **kw)
    try:
        yield offer, chunks
    finally:
        os.close(w)
        t.join(10)


def _gone(port):
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.fixture
def seed(tmp_path):
    """yields (offer, chunks); the seed is stopped by closing its input, as the controller does."""
    offer, chunks, t, w = _serve(tmp_path)
    yield offer, chunks
    os.close(w)                         # the controller's channel ends: the seed stops serving
    t.join(10)
    assert not t.is_alive(), "the seed kept serving after its channel ended"
    _gone(offer["port"])


def _fresh(tmp_path, name="machine-cache"):
    return Cache(str(tmp_path / name), None)


def test_a_machine_fetches_every_chunk_from_the_seed_and_keeps_them_verified(seed, tmp_path):
    offer, chunks = seed
    cache = _fresh(tmp_path)
    missed, fetched, why = fetch_peer(offer, list(chunks), cache)
    assert missed == [] and why is None
    assert fetched == sum(map(len, chunks.values()))
    for h, data in chunks.items():
        assert cache.read(h, "test") == data


def test_a_chunk_the_seed_lacks_is_left_for_the_controller_and_the_rest_still_arrive(seed, tmp_path):
    offer, chunks = seed
    absent = hashlib.sha256(b"not on the seed").hexdigest()
    cache = _fresh(tmp_path)
    missed, fetched, why = fetch_peer(offer, [absent, *chunks], cache)
    assert missed == [absent]
    assert "lacks" in why and fetched == sum(map(len, chunks.values()))


def test_without_the_token_nothing_is_served(seed, tmp_path):
    offer, chunks = seed
    cache = _fresh(tmp_path)
    missed, fetched, why = fetch_peer({**offer, "token": "0" * 64}, list(chunks), cache)
    assert sorted(missed) == sorted(chunks) and fetched == 0 and "403" in why
    assert not any(cache.has(h) for h in chunks)


def test_a_server_without_the_pinned_certificate_is_not_trusted(seed, tmp_path):
    """Someone else listening where the seed should be (or in the middle) cannot feed the machine."""
    offer, chunks = seed
    other_cert, _ = one_off_tls()
    cache = _fresh(tmp_path)
    missed, fetched, why = fetch_peer({**offer, "cert": other_cert}, list(chunks), cache)
    assert sorted(missed) == sorted(chunks) and fetched == 0
    assert "CERTIFICATE_VERIFY_FAILED" in why


def test_a_seed_that_cannot_be_reached_hands_everything_back_quickly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # nobody listens here once it is closed
    cert, _ = one_off_tls()
    cache = _fresh(tmp_path)
    hashes = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(50)]
    missed, fetched, why = fetch_peer({"host": "127.0.0.1", "port": port, "cert": cert, "token": "x"}, hashes, cache)
    assert missed == hashes and fetched == 0 and "ConnectionRefused" in why


def test_an_offer_that_makes_no_tls_context_hands_everything_back(tmp_path):
    """A damaged offer (or a Python without ssl) is a fallback to the controller, never a failed sync."""
    hashes = [hashlib.sha256(b"x").hexdigest()]
    missed, fetched, why = fetch_peer({"host": "127.0.0.1", "port": 1, "cert": "not a certificate", "token": "t"},
                                      hashes, _fresh(tmp_path))
    assert missed == hashes and fetched == 0 and "SSLError" in why


def test_a_machine_not_of_the_lease_is_turned_away_even_with_the_token(tmp_path):
    with serving(tmp_path, allow=["10.9.9.9"]) as (offer, chunks):
        missed, fetched, why = fetch_peer(offer, list(chunks), _fresh(tmp_path))
        assert sorted(missed) == sorted(chunks) and fetched == 0 and why


def test_a_seed_stops_at_its_deadline_even_if_its_channel_never_ends(tmp_path):
    """A controller whose link died without a FIN: the seed must not serve (and hold its cache) for hours."""
    offer, chunks, t, w = _serve(tmp_path, deadline_s=2)
    try:
        t.join(10)
        assert not t.is_alive(), "the seed served past its deadline"
        _gone(offer["port"])
    finally:
        os.close(w)


def test_connections_that_never_speak_are_closed_and_the_seed_serves_again(tmp_path, monkeypatch):
    """Idle connections (a scanner, a slowloris) beyond the cap are closed at once, the rest after the
    idle limit; then the lease's machines fetch everything."""
    import fleet.snapshots.remote_peer as remote_peer
    monkeypatch.setattr(remote_peer, "SERVE_IDLE_S", 1)
    with serving(tmp_path) as (offer, chunks):
        idle = [socket.create_connection(("127.0.0.1", offer["port"]), timeout=5) for _ in range(80)]
        time.sleep(2.5)
        for s in idle:
            s.settimeout(5)
            assert s.recv(1) == b"", "an idle connection was kept open past the seed's idle limit"
            s.close()
        missed, fetched, why = fetch_peer(offer, list(chunks), _fresh(tmp_path))
        assert missed == [] and fetched == sum(map(len, chunks.values())), why


def test_a_corrupt_entry_on_the_seed_is_refused_by_the_fetcher_and_left_for_the_controller(seed, tmp_path):
    offer, chunks = seed
    bad = sorted(chunks)[0]
    path = Cache(str(tmp_path / "seed-cache"), None).locate(bad)[0]
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"\0" * 16)
    cache = _fresh(tmp_path)
    missed, fetched, why = fetch_peer(offer, list(chunks), cache)
    assert missed == [bad] and "corrupt" in why and not cache.has(bad)
    assert fetched == sum(len(d) for h, d in chunks.items() if h != bad)


def test_a_seed_answering_part_of_a_request_is_asked_again_for_the_rest(tmp_path, monkeypatch):
    """Each answer is bounded in bytes (the seed's memory); the fetcher asks for what was left out."""
    import fleet.snapshots.remote_peer as remote_peer
    monkeypatch.setattr(remote_peer, "SERVE_BATCH", 3000)          # about two chunks an answer
    with serving(tmp_path) as (offer, chunks):
        missed, fetched, why = fetch_peer(offer, list(chunks), _fresh(tmp_path))
        assert missed == [] and fetched == sum(map(len, chunks.values())), why


def test_a_large_answer_to_a_slow_reader_is_not_cut_by_the_idle_limit(tmp_path, monkeypatch):
    """The idle limit bounds a silent connection, not the time one answer takes on a slow link."""
    import fleet.snapshots.remote_peer as remote_peer
    monkeypatch.setattr(remote_peer, "SERVE_IDLE_S", 1)
    monkeypatch.setattr(remote_peer, "SERVE_BATCH", 64 * 1024 * 1024)      # one answer for everything
    cache = _fresh(tmp_path)
    put = cache.put

    def slow_put(h, data):                  # ~5 MiB/s: 24 MiB take ~5 s
        time.sleep(0.2)
        put(h, data)
    cache.put = slow_put
    with serving(tmp_path, sizes=[1024 * 1024 + i for i in range(24)]) as (offer, chunks):
        missed, fetched, why = fetch_peer(offer, list(chunks), cache)
        assert missed == [] and fetched == sum(map(len, chunks.values())), why


def test_an_unreachable_seed_is_remembered_then_forgotten_then_remembered_again(fleet_home, monkeypatch):
    from types import SimpleNamespace

    from fleet.snapshots import sync_peers
    now = [1_000_000.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    cut = SimpleNamespace(bytes_peer=0, direct_error="unreachable: TimeoutError: timed out")
    fine = SimpleNamespace(bytes_peer=10, direct_error=None)
    idle = SimpleNamespace(bytes_peer=0, direct_error=None)          # needed nothing from the seed
    key = "10.0.0.5|ubuntu|~/.cache/fleet/chunks"
    sync_peers.judge_reach(key, [cut, cut])
    assert sync_peers.recently_unreachable(key)
    sync_peers.judge_reach(key, [idle, None])                          # says nothing about the seed
    assert sync_peers.recently_unreachable(key)
    now[0] += sync_peers.UNREACHABLE_FOR_S + 1
    assert not sync_peers.recently_unreachable(key)                    # tried again after a while
    sync_peers.judge_reach(key, [cut])
    assert sync_peers.recently_unreachable(key), "found unreachable again, but not remembered"
    sync_peers.judge_reach(key, [fine, cut])                           # one peer got through
    assert not sync_peers.recently_unreachable(key)


def test_the_seed_serves_only_the_chunks_of_this_syncs_snapshots(tmp_path):
    """The token opens the data this sync carries, not every chunk the host's cache keeps for the
    same user's other leases."""
    with serving(tmp_path, others=3) as (offer, chunks):
        cache = Cache(str(tmp_path / "seed-cache"), None)
        others = [h for h in _cached(cache) if h not in chunks]
        assert len(others) == 3
        missed, fetched, why = fetch_peer(offer, [*others, *chunks], _fresh(tmp_path))
        assert sorted(missed) == sorted(others) and "lacks" in why
        assert fetched == sum(map(len, chunks.values()))


def test_a_seed_without_the_syncs_manifest_serves_nothing(tmp_path):
    """The controller then pushes everything itself: told why, no port."""
    r, w = os.pipe()
    answers = []
    cert, key = one_off_tls()
    Cache(str(tmp_path / "seed-cache"), None).finish()
    import fleet.snapshots.remote_cache as remote_cache
    with pytest.raises(remote_cache.Failure, match="does not hold the manifest"):
        serve_chunks({"cache": str(tmp_path / "seed-cache"), "cert": cert, "key": key, "token": "t",
                      "bind": "127.0.0.1", "snapshots": ["a" * 64]}, os.fdopen(r, "rb"), answers.append)
    os.close(w)
    assert answers == []


def _cached(cache):
    return [name for d in os.listdir(cache.root) if len(d) == 2
            for name in os.listdir(os.path.join(cache.root, d)) if len(name) == 64]
