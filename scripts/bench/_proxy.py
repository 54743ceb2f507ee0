"""The sync benchmark's wire meter: a TCP relay on loopback that counts every byte both ways, so fleet's
and rsync's traffic are counted the same way, by something neither of them controls."""
from __future__ import annotations

import socket
import threading


class Proxy:
    """A counting TCP relay 127.0.0.1:port → 127.0.0.1:target (bytes both ways, all connections)."""

    def __init__(self, target: int):
        self.target, self.count, self.lock = target, 0, threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self) -> int:
        with self.lock:
            n, self.count = self.count, 0
        return n

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        buf = bytearray(1 << 20)
        try:
            while True:
                n = a.recv_into(buf)
                if not n:
                    break
                b.sendall(memoryview(buf)[:n])
                with self.lock:
                    self.count += n
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
