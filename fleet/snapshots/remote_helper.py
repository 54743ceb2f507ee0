"""The machine side of snapshot sync. Stdlib only: it is sent inline (`python -c`) on every sync.

One process, one SSH channel, two round trips:
  1. read a JSON line {"cache", "want", "targets"}; answer {"missing": [...], "current": [...]}:
     chunks the cache lacks, and targets already materialised from the same snapshot(s).
  2. read frames "<64 hex id><12 digit length>\\n<bytes>" until a frame with length 0, storing each
     chunk in the cache only if its sha256 matches; then read a JSON line {"manifests", "targets"}
     and materialise each target (verify every file's sha256, build beside, rename into place);
     answer {"ok": true, ...} or {"ok": false, "error": "..."} naming the chunk or path.
"""
import hashlib
import json
import os
import shutil
import sys

MARKER = ".fleet-snapshot"


def chunk_path(cache, h):
    return os.path.join(cache, h[:2], h)


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def readline(stream):
    line = stream.readline()
    if not line:
        raise EOFError("controller closed the stream")
    return json.loads(line)


def marker_of(target):
    return "+".join(target["ids"])


def is_current(target):
    dest = target["dest"]
    try:
        with open(os.path.join(dest, MARKER)) as f:
            if f.read().strip() != marker_of(target):
                return False
    except OSError:
        return False
    # Cheap re-check that nothing was removed or truncated since (files are read-only anyway).
    for path, size in target.get("sizes", {}).items():
        try:
            if os.lstat(os.path.join(dest, path)).st_size != size:
                return False
        except OSError:
            return False
    return True


def receive(stream, cache):
    got = 0
    while True:
        header = stream.read(77)
        if len(header) != 77:
            raise EOFError("chunk stream ended early")
        h, n = header[:64].decode(), int(header[64:76])
        if n == 0:
            return got
        data = stream.read(n)
        if len(data) != n or hashlib.sha256(data).hexdigest() != h:
            raise ValueError("chunk %s arrived corrupt" % h[:12])
        path = chunk_path(cache, h)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.tmp%d" % (path, os.getpid())
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        got += n


def make_writable(root):
    for dirpath, _dirs, _files in os.walk(root):
        try:
            os.chmod(dirpath, 0o755)
        except OSError:
            pass


def remove_tree(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.exists(path):
        make_writable(path)
        shutil.rmtree(path)


def clean(rel):
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("unsafe path %r in manifest" % rel)
    return rel


def write_entries(root, manifest, cache, read_only):
    for e in sorted(manifest["entries"], key=lambda e: e["path"]):
        target = os.path.join(root, clean(e["path"]))
        if e["type"] == "dir":
            os.makedirs(target, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.lexists(target):
            remove_tree(target)
        if e["type"] == "symlink":
            os.symlink(e["target"], target)
            continue
        whole = hashlib.sha256()
        with open(target, "wb") as out:
            for h, _n in e["chunks"]:
                try:
                    with open(chunk_path(cache, h), "rb") as f:
                        data = f.read()
                except OSError:
                    raise ValueError("chunk %s of %s is missing from the machine's cache" % (h[:12], e["path"]))
                whole.update(data)
                out.write(data)
        if whole.hexdigest() != e["sha256"]:
            raise ValueError("%s does not match its recorded hash after transfer" % e["path"])
        os.chmod(target, (e["mode"] & ~0o222) if read_only else e["mode"])
    for rel in manifest.get("deleted", []):
        path = os.path.join(root, clean(rel))
        if os.path.lexists(path):
            remove_tree(path)


def materialise(target, manifests, cache):
    dest = target["dest"].rstrip("/")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, ".%s.partial-%d" % (os.path.basename(dest), os.getpid()))
    remove_tree(tmp)
    os.makedirs(tmp)
    try:
        for sid in target["ids"]:          # a base snapshot, then overlays (dirty code) in order
            write_entries(tmp, manifests[sid], cache, target.get("read_only", False))
        with open(os.path.join(tmp, MARKER), "w") as f:
            f.write(marker_of(target) + "\n")
        if target.get("read_only"):
            for dirpath, _dirs, _files in os.walk(tmp, topdown=False):
                os.chmod(dirpath, 0o555)
        old = os.path.join(parent, ".%s.old-%d" % (os.path.basename(dest), os.getpid()))
        if os.path.lexists(dest):
            os.replace(dest, old)
        os.replace(tmp, dest)
        remove_tree(old)
    except BaseException:
        remove_tree(tmp)
        raise


def main():
    stream = sys.stdin.buffer
    req = readline(stream)
    cache = req["cache"]
    os.makedirs(cache, exist_ok=True)
    missing = [h for h in req["want"] if not os.path.exists(chunk_path(cache, h))]
    current = [t["dest"] for t in req["targets"] if is_current(t)]
    send({"missing": missing, "current": current})
    try:
        received = receive(stream, cache)
        job = readline(stream)
        done = []
        for target in job["targets"]:
            materialise(target, job["manifests"], cache)
            done.append(target["dest"])
        send({"ok": True, "received": received, "materialised": done})
    except (ValueError, OSError, EOFError) as exc:
        send({"ok": False, "error": str(exc)})


if __name__ == "__main__":
    main()
