"""An editable install's path hooks name the source directory, which holds the lease id on a team
host or a local machine: its package hash differed on every lease, so a rerun of a project whose
setup runs `pip install -e .` was refused after its machines were paid for (review finding)."""
from __future__ import annotations

import base64
import hashlib
import json

from fleet.environment.probe import packages


def _row(site, rel: str, data: bytes) -> str:
    path = site / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{rel},sha256={digest},{len(data)}"


def _site(tmp_path, name: str, source: str, editable: bool):
    site = tmp_path / name
    info = "tiny-1.0.dist-info"
    rows = [_row(site, f"{info}/METADATA", b"Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n\n"),
            _row(site, "__editable__.tiny-1.0.pth", f"import __editable___tiny_finder; # {source}\n".encode()),
            _row(site, "__editable___tiny_finder.py", f"MAPPING = {{'tiny': '{source}/tiny'}}\n".encode())]
    (site / info / "direct_url.json").write_text(json.dumps({"url": f"file://{source}",
                                                             "dir_info": {"editable": editable}}))
    (site / info / "RECORD").write_text("\n".join(rows + [f"{info}/RECORD,,"]) + "\n")
    return str(site)


def test_an_editable_install_hashes_the_same_from_any_source_directory(tmp_path):
    one = packages(_site(tmp_path, "a", "/scratch/fleet/l-1111/n0/work", editable=True))
    two = packages(_site(tmp_path, "b", "/scratch/fleet/l-2222/n0/work", editable=True))
    assert [p["sha256"] for p in one] == [p["sha256"] for p in two]


def test_files_of_an_ordinary_install_all_count(tmp_path):
    one = packages(_site(tmp_path, "a", "/x/one", editable=False))
    two = packages(_site(tmp_path, "b", "/x/two", editable=False))
    assert [p["sha256"] for p in one] != [p["sha256"] for p in two]
