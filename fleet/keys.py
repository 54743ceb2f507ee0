"""Fresh ed25519 key pairs for leases (client keys) and local machines (host keys).

Generated in-process with `cryptography` (a paramiko dependency), written 0600 atomically.
"""
from __future__ import annotations

import os
from pathlib import Path


def generate_ed25519(path: Path, comment: str = "fleet") -> str:
    """Write an OpenSSH private key at `path` (0600) and `path`.pub; return the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    os.replace(tmp, path)
    line = f"{public} {comment}"
    Path(str(path) + ".pub").write_text(line + "\n")
    return public


def secure_delete(path: Path) -> None:
    for candidate in (Path(path), Path(str(path) + ".pub")):
        try:
            candidate.unlink()
        except FileNotFoundError:
            pass
