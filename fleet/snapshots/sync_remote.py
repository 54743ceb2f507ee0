"""The machine side of a sync, seen from the controller: where a host keeps its chunk cache and a
lease's data, how big the cache may grow, and the command that starts the stdlib helper
(remote_files + remote_cache + remote_tree + remote_patch + remote_peer + remote_helper), which the host keeps cached under its hash."""
from __future__ import annotations

import hashlib
import os
import shlex
from functools import lru_cache

from ..errors import UsageError
from ..models import Machine

DEFAULT_CACHE_MAX = 50 * 1024 ** 3     # bytes held only by a host's chunk cache (not by live trees)
REMOTE_CACHE = "~/.cache/fleet/chunks"  # a cloud machine's default: per user, outside every lease

# Runs the helper the host has cached under its hash, or reads it from the channel once and caches it;
# input that ends before a request (a dialled channel nobody used) ends it quietly. Beside the source
# the host keeps the helper compiled (marshal, per Python: <helper>.<cache tag>.code, headed by the
# helper's hash and the code's own), so a sync does not compile ~35 KB of Python every time. Those
# hashes catch damage, not forgery: the cache (resolved: a configured cache_dir may be a link) and its
# helper/ must be this user's own directories, or another user of a team host's shared workdir could
# plant code that runs as this login. One of ours that others could write (a umask of 002 made it)
# is made private, and nothing kept in helper/ is trusted then; one others could only read is made
# private too (its chunks are the user's data). A link on the cache's path is followed only when it
# is root's or this login's: in a shared sticky workdir another user can make `.chunk-cache-<login>`
# first, a link to a directory of this login's that they can read (a 0755 home), and the cache's
# chunks were written there. The helper is handed the resolved root (ROOT), never the path again,
# so a link swapped after these checks leads nowhere. The links are checked before anything is made
# (nothing is created through a refused one) and again after (one made in between), on a path
# without '..' (which the kernel resolves after a link, not as text).
BOOTSTRAP = """import hashlib,marshal,os,stat,sys
H,P=sys.argv[1],os.path.expanduser(sys.argv[2])
S=os.fdopen(0,'rb',buffering=1<<20)
R=os.path.dirname(os.path.dirname(P))
if '..' in R.split('/'): sys.exit("fleet: the chunk cache %s has a '..' in it: give the directory without one"%R)
def W():
    d=os.path.abspath(R)
    while d!=os.path.dirname(d):
        try: s=os.lstat(d)
        except FileNotFoundError: s=None
        if s and stat.S_ISLNK(s.st_mode) and s.st_uid not in (0,os.geteuid()): sys.exit("fleet: the chunk cache %s passes through %s, a link another user made (uid %d): refusing to follow it"%(R,d,s.st_uid))
        d=os.path.dirname(d)
W();os.makedirs(R,mode=0o700,exist_ok=True);W()
R=os.path.realpath(R);P=os.path.join(R,os.path.basename(os.path.dirname(P)),os.path.basename(P))
for d in (R,os.path.dirname(P)):
    try: s=os.lstat(d)
    except FileNotFoundError: continue
    if not stat.S_ISDIR(s.st_mode) or s.st_uid!=os.geteuid(): sys.exit("fleet: the chunk cache %s is not this user's own directory (owner uid %d): refusing to run code kept there"%(d,s.st_uid))
    if s.st_mode&0o77:
        os.chmod(d,0o700)
        if d!=R and s.st_mode&0o22:
            for f in os.listdir(d): os.unlink(os.path.join(d,f))
C='%s.%s.code'%(P,sys.implementation.cache_tag)
code=F=None
try:
    with open(C,'rb') as f: b=f.read()
    if b[:64]==H.encode() and hashlib.sha256(b[128:]).hexdigest().encode()==b[64:128]: code=marshal.loads(b[128:])
except (OSError,ValueError,EOFError,TypeError): pass
if code is None:
    try:
        with open(P,'rb') as f: src=f.read()
    except OSError: src=b''
    if hashlib.sha256(src).hexdigest()!=H:
        F=S.readline()
        if not F: sys.exit()
        sys.stdout.write('{"helper": "need"}\\n');sys.stdout.flush()
        src=S.read(int(S.readline()))
        if hashlib.sha256(src).hexdigest()!=H: sys.exit('sync helper arrived corrupt')
        os.makedirs(os.path.dirname(P),mode=0o700,exist_ok=True)
        t='%s.%d'%(P,os.getpid())
        with open(t,'wb') as f: f.write(src)
        os.replace(t,P)
    code=compile(src,P,'exec')
    try:
        m=marshal.dumps(code);t='%s.%d'%(C,os.getpid())
        with open(t,'wb') as f: f.write(H.encode()+hashlib.sha256(m).hexdigest().encode()+m)
        os.replace(t,C)
    except OSError: pass
exec(code,{'__name__':'__main__','STREAM':S,'FIRST':F,'ROOT':R})
"""


@lru_cache(maxsize=1)
def helper_source() -> bytes:
    here = os.path.dirname(os.path.abspath(__file__))     # plain files beside this one (no importlib.resources)
    parts = []
    for name in ("remote_files.py", "remote_cache.py", "remote_tree.py", "remote_patch.py", "remote_peer.py", "remote_helper.py"):
        with open(os.path.join(here, name), encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts).encode()


def helper_hash() -> str:
    return hashlib.sha256(helper_source()).hexdigest()


def host_cache_dir(machine: Machine, configured: str | None = None) -> str:
    """Where a host keeps chunks between leases: beside a team host's lease workdirs; under
    FLEET_HOME for local machines (all on the controller's own host); in an AWS sandbox instance's
    own directory (outside its workdir), gone when the instance is, as an EC2 instance's disk is:
    sharing FLEET_HOME's cache would let one sandbox instance build from chunks another received,
    which separate instances never can; `cache_dir` from fleet.toml, else the login's ~/.cache,
    elsewhere (a cloud instance: point it at the instance store or a cache volume)."""
    suffix = f"/{machine.lease_id}/{machine.id}"
    if on_this_computer_as_us(machine):
        instance_dir = machine.provider_ref.get("sandbox_dir")
        if instance_dir:
            return f"{instance_dir}/chunk-cache"
        from ..paths import subdir
        return str(subdir("cache") / "chunks")
    if machine.workdir.endswith(suffix):      # per login: a team's shared workdir has several
        return machine.workdir[:-len(suffix)] + f"/.chunk-cache-{machine.user}"
    return configured or os.environ.get("FLEET_CHUNK_CACHE_DIR") or REMOTE_CACHE


def on_this_computer_as_us(machine: Machine) -> bool:
    """A loopback machine whose login is this process's own user, so it may share FLEET_HOME's
    caches (the local provider; the AWS sandbox's Python environments, not its chunks). A sandbox machine logging in as another user
    (FLEET_AWS_SANDBOX_LOGIN) keeps its caches in its login's home, as a cloud instance does."""
    import getpass
    loopback = machine.host.startswith("127.") or machine.host in ("localhost", "::1")
    return loopback and machine.user == getpass.getuser()


def chunk_cache(machine: Machine) -> str:
    return host_cache_dir(machine)


def data_root(machine: Machine) -> str:
    """Where a machine's `[data]` entries are staged ($FLEET_DATA), one directory each."""
    return f"{machine.workdir}/data"


def data_dir(machine: Machine, name: str) -> str:
    return f"{data_root(machine)}/{name}"


def cache_max_bytes(value: str | None = None) -> int | None:
    """`cache_max` (fleet.toml) or FLEET_CHUNK_CACHE_MAX: bytes (K/M/G/T suffixes) or "none"; default 50 GiB."""
    raw = (os.environ.get("FLEET_CHUNK_CACHE_MAX") or value or "").strip().lower()
    if not raw:
        return DEFAULT_CACHE_MAX
    if raw in ("none", "unlimited", "off"):
        return None
    import re
    size = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgt])i?)?b?", raw)   # ASCII digits: no inf, nan or -1
    if size is None:
        raise UsageError(f"cache_max / FLEET_CHUNK_CACHE_MAX = {raw!r} is not a size",
                         hint="e.g. 20G, 500M or none")
    return int(float(size.group(1)) * {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}.get(size.group(2), 1))


def helper_command(machine: Machine, cache_dir: str | None = None) -> str:
    """The command a sync channel runs on the machine: the bootstrap, with the helper's hash and where
    the host keeps it. -S: the helper needs only the standard library; skipping site saves start-up."""
    return shlex.join([machine.python, "-I", "-S", "-c", BOOTSTRAP, helper_hash(),
                       f"{host_cache_dir(machine, cache_dir)}/helper/{helper_hash()}.py"])
