"""Secret values kept out of everything fleet prints or stores.

A secret is a value, not a name: `secrets = ["WANDB_API_KEY"]` (plus FLEET_SECRET_NAMES) names
environment variables whose values are secret, and `[env]` entries named like a token or password
are secret too, as is any value in a well-known credential format (`GH_PAT=ghp_…`, `HF=hf_…`)
whatever its variable is called. Wherever such a value appears — typed into the command by a shell that expanded
it, inside another `[env]` value, in `setup`, in a log line — it is replaced before the text is
printed (`***`) or stored (`<redacted>` in records, the state database and summary.json).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

MASK = "***"
REDACTED = "<redacted>"
# A password under its usual short names too: DB_PASS, SMTP_PASS, MYSQL_PWD (MySQL's own), GPG_PASSPHRASE.
# Not PWD or OLDPWD (directories), nor PASS inside a word (BYPASS) or before more of a name (PASS_RATE).
_PASSWORD_NAME = r"PASSWORD|PASSWD|PASSPHRASE|(?:^|_)PASS$|_PWD$"
_SECRET_NAME = re.compile(rf"TOKEN|SECRET|{_PASSWORD_NAME}|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
# A URL's password: after "user:", up to the last "@" before the path (as urllib.parse splits it).
# The scheme is bounded: unbounded, a long run of letters was scanned from every start (100 KB: 10 s).
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^/:@\s]*:([^/\s]+)@")
_DSN_PASSWORD = re.compile(r"password=([^&\s]+)")
_STATE_PASSWORD = re.compile(r"://[^/:@\s]*:(\S+)@")     # to the last "@": it may hold "/" or "@"
# Any URL's password in a line fleet prints, to the last "@" of the word (a raw AWS secret, base64),
# "scheme:/" too: a path made of a URL (`…/https:/u:pw@h/x`) quotes one. A "'" may be in a password
# (Python then quotes the value with '"'): only '"' or a space ends the word.
_PRINTED_URL_USER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}:/{1,2}[^/:@\s'\"]*:")
_PRINTED_WORD = re.compile(r"[^\s\"]+")


SCRUB_MAX_BYTES = 1 << 30   # a text output larger than this is left as written (docs/ci.md)
MIN_MASKED = 4        # a shorter value is no secret, and masking it would take it out of every id and hash
MIN_GUESSED = 6       # a value secret only by its variable's name: NUM_KEYS=8, MAX_TOKENS=4096 are settings
_NOT_SECRET_WORDS = {"true", "false", "yes", "no", "on", "off", "none", "null"}
_ALWAYS_SECRET = re.compile(rf"SECRET|{_PASSWORD_NAME}|CREDENTIAL", re.IGNORECASE)
# Credentials known by their value, whatever their variable is called (GH_PAT, HF, OPENAI): each
# format's fixed prefix and a body long enough, and of the format's characters, that a word, a
# path or a model name (`sk-learn`, `hf_datasets_cache`) never matches. Matched against the whole
# value, never a part of it.
_CREDENTIAL = re.compile(r"""
    gh[opusr]_[A-Za-z0-9]{30,}                           # GitHub: personal, OAuth, user, server, refresh
  | github_pat_[A-Za-z0-9_]{40,}                        # GitHub fine-grained personal
  | glpat-[A-Za-z0-9_-]{20,}                            # GitLab personal, project, group
  | xox[abprs]-(?=[A-Za-z-]*[0-9])[A-Za-z0-9-]{10,}     # Slack (its ids are digits)
  | (?:AKIA|ASIA)[A-Z0-9]{16}                           # AWS access key id
  | hf_[A-Za-z0-9]{30,}                                 # Hugging Face
  | sk-(?=[a-z_-]*[A-Z0-9])[A-Za-z0-9_-]{32,}           # OpenAI (sk-…, sk-proj-…), Anthropic (sk-ant-…)
  | eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*         # JWT: header.payload.signature
  | -----BEGIN\ [A-Z0-9 ]*PRIVATE\ KEY(?:\ BLOCK)?-----.+-----END\ [A-Z0-9 ]*PRIVATE\ KEY(?:\ BLOCK)?-----
""", re.VERBOSE | re.DOTALL)
_CREDENTIAL_MAX = 1 << 16          # longer than any key block: a file's contents, not a credential
_WORD = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")   # a token in a command: JWT dots inside
# A key block is no word (spaces in its armour): found whole inside a longer value, such as a
# service account's JSON with the key's newlines written as "\n". Its body never crosses another
# BEGIN: each one's search ends at the next, so a value of BEGINs is read once, not once per BEGIN.
_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:(?!-----BEGIN ).)+?"
                        r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----", re.DOTALL)


def looks_secret(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def looks_credential(value: object) -> bool:
    """A value in a well-known credential format (a GitHub, GitLab, Slack, Hugging Face, OpenAI or
    Anthropic token, an AWS access key id, a JWT, a PEM private key): secret by what it is."""
    text = str(value).strip()
    return len(text) <= _CREDENTIAL_MAX and _CREDENTIAL.fullmatch(text) is not None


def credentials_in(text: str) -> list[str]:
    """The words of `text` (a command, setup) that are credentials by their format (`--token ghp_…`)."""
    if len(text) > _CREDENTIAL_MAX * 4:
        return []
    return [w for w in _WORD.findall(text) if looks_credential(w)] + [
        form for block in _KEY_BLOCK.findall(text) for form in {block, _unescaped(block)}]


def _unescaped(block: str) -> str:
    """A key block as the program that reads its JSON has it: line breaks where the value wrote
    `\\n`, and `/` where it wrote `\\/`. Printed or saved so (`jq -r .private_key > key.pem`), its
    lines are masked one by one; the block as the value wrote it is never in that text."""
    return block.replace("\\r", "\r").replace("\\n", "\n").replace("\\/", "/")


def holds_url_password(value: str) -> bool:
    """A URL with a password in it (`https://u:pw@…`): a secret whatever its variable is called."""
    return bool(_URL_PASSWORD.search(value))


def without_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it shown as `***`: a refusal quotes the value it
    refused (`store = "https://u:TOKEN@minio…"`, a `[data]` source), and error lines, warnings and
    tracebacks land in CI logs and terminals others see."""
    return _PRINTED_WORD.sub(_word_without_password, text) if ":/" in text and "@" in text else text


def without_state_password(url: str) -> str:
    """A state URL with its password shown as `***`, as a URL's (`u:pw@`) or as libpq's parameter
    (`?password=…`), both of which postgresql:// takes."""
    return _DSN_PASSWORD.sub("password=***", without_url_passwords(url))


def _word_without_password(found: "re.Match[str]") -> str:
    """One word, its password (from the first URL's "user:" to the word's last "@") as ***. The last
    "@" is found once: a pattern scanning to it from every "scheme:/" took minutes on a long answer
    quoted in an error (128 KB of "a:/:": 30 s)."""
    word = found.group()
    at = word.rfind("@")
    if at < 0:
        return word
    for user in _PRINTED_URL_USER.finditer(word, 0, at):
        if user.end() < at:
            return word[:user.end()] + MASK + word[at:]
    return word


def secret_by_name(name: str, value: object) -> bool:
    """An [env] value taken for a secret by its variable's name, or by its own format whatever the
    name (looks_credential: `GH_PAT=ghp_…`). A password, secret or
    credential always is (a PIN-like `84721953` or `admin` too, MIN_MASKED characters and up); a
    name with KEY, TOKEN or AUTH only where the value could be one: TOKENIZERS_PARALLELISM=false,
    NUM_KEYS=8 or MAX_TOKENS=131072 are settings, and masking them would blank every "8" or "false"
    in the run's ids, hashes and logs."""
    text = str(value)
    if looks_credential(text):
        return True
    if _ALWAYS_SECRET.search(name):
        return len(text) >= MIN_MASKED
    return (looks_secret(name) and len(text) >= MIN_GUESSED and not text.isdigit()
            and text.strip().lower() not in _NOT_SECRET_WORDS)


def _looks_generated(value: str) -> bool:
    """Long, and of more than one kind of character: a token, not a word."""
    kinds = sum(any(test(c) for c in value) for test in (str.islower, str.isupper, str.isdigit,
                                                        lambda c: not c.isalnum()))
    return len(value) >= 12 and kinds >= 2


def secret_names(config=None, environ: Mapping[str, str] | None = None) -> list[str]:
    """config.secrets plus the names listed in FLEET_SECRET_NAMES (comma or space separated)."""
    e = os.environ if environ is None else environ
    names = list(getattr(config, "secrets", None) or [])
    names += [n for n in re.split(r"[,\s]+", e.get("FLEET_SECRET_NAMES", "")) if n]
    return list(dict.fromkeys(names))


class Masker:
    """Replaces every secret value (and each line of a multi-line one) with `mark`."""

    def __init__(self, values: list[str], mark: str = MASK, url_passwords: list[str] | tuple[str, ...] = ()):
        """`url_passwords`: masked where they sit in a URL (":…@"), whatever their length."""
        self.url_passwords = sorted({p for p in url_passwords if p}, key=len, reverse=True)
        parts = set()
        for v in values:
            if v:
                parts.add(v)
                parts.update(line.strip() for line in v.splitlines() if line.strip())
        parts = {p for p in parts if len(p) >= MIN_MASKED}
        # As a JSON string holds it too: a program that dumps its config or environment to JSON
        # (args.json, wandb's config) writes a `"`, a `\\` or a non-ASCII letter escaped, and the value
        # as given never appears in the file, nor in fleet's own JSON (the merged metrics.json).
        escaped = {json.dumps(p, ensure_ascii=only_ascii)[1:-1] for p in parts for only_ascii in (True, False)}
        # longest first, so a value that contains another is masked whole
        self.values = sorted(parts | escaped, key=len, reverse=True)
        self.given = sorted(parts, key=len, reverse=True)   # a GitHub runner adds the escaped forms itself
        self.mark = mark

    @classmethod
    def for_config(cls, config=None, environ: Mapping[str, str] | None = None, *,
                   env: Mapping[str, Any] | None = None, names: list[str] | tuple[str, ...] = (),
                   mark: str = MASK, texts: list[str] | tuple[str, ...] = ()) -> "Masker":
        """The secret values of a run: named secrets from the environment, [env] values (of
        `config.env`, or `env`) whose names are secrets or look secret, and the password of every
        URL in those values, the config's command and setup, and `texts`."""
        e = os.environ if environ is None else environ
        wanted = secret_names(config, e) + list(names)
        literal_env = dict(getattr(config, "env", None) or {}) | dict(env or {})
        literal = [str(v) for k, v in literal_env.items() if k in wanted or secret_by_name(k, v)]
        # A password inside a URL value is secret whatever the variable is called (DATABASE_URL,
        # MLFLOW_TRACKING_URI): masked as ":…@" where it sits in a URL, and on its own too only when
        # it looks generated (a word such as "postgres" would mask unrelated text).
        # So is one typed into the command or setup (`pip install -i https://u:pw@…`): it reached the
        # record, the state database, the logs and the terminal as typed.
        typed = [getattr(config, "command", None), getattr(config, "setup", None), *texts]
        in_urls = [m.group(1) for v in [*map(str, literal_env.values()), *(t for t in typed if isinstance(t, str))]
                   for m in _URL_PASSWORD.finditer(v)]
        # The state database's password (team mode): an error quoting its URL may reach a CI summary.
        state_url = e.get("FLEET_STATE_URL") or str(getattr(config, "state_url", None) or "")
        in_urls += [m.group(1) for m in _STATE_PASSWORD.finditer(state_url)]
        literal += [m.group(1) for m in _DSN_PASSWORD.finditer(state_url)]
        # A credential by its format: in this environment whatever its name (the shell may have
        # expanded `$GH_PAT` into the command), or typed into the command or setup (`--token hf_…`).
        # Inside a longer value too (`TRAIN_ARGS="--token ghp_…"`, `AUTH_HEADER="Bearer eyJ…"`):
        # the value is printed and stored whole, so the credential word in it is masked.
        literal += [v for v in e.values() if looks_credential(v)]
        literal += [w for v in e.values() for w in credentials_in(v)]
        literal += [w for v in literal_env.values() for w in credentials_in(str(v))]
        literal += [w for t in typed if isinstance(t, str) for w in credentials_in(t)]
        return cls([e.get(n, "") for n in wanted] + literal + [p for p in in_urls if _looks_generated(p)], mark,
                   in_urls)

    def redacting(self) -> "Masker":
        """The same values, marked as stored records mark them."""
        twin = Masker([], REDACTED)
        twin.values, twin.given, twin.url_passwords = self.values, self.given, self.url_passwords
        return twin

    def __bool__(self) -> bool:
        return bool(self.values or self.url_passwords)

    def __call__(self, text: str) -> str:
        for p in self.url_passwords:
            if p in text:
                text = text.replace(f":{p}@", f":{self.mark}@")
        for v in self.values:
            if v in text:
                text = text.replace(v, self.mark)
        return text

    def mask_obj(self, obj: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, strings) with every string masked."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {self.mask_obj(k) if isinstance(k, str) else k: self.mask_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.mask_obj(v) for v in obj)
        return obj

    def github_commands(self) -> list[str]:
        """`::add-mask::` lines: the runner hides these values in every later log line of the job.
        The runner reads a command per line and masks line by line, so a value of several lines is
        registered as its lines, never whole: its raw newline ended the command after the first line
        and printed the rest (a service account's private key) in clear. `%`, CR and LF are escaped as
        the runner unescapes a command's data, so a value holding `%0A` registers as itself."""
        lines = [v for v in self.given if "\n" not in v and "\r" not in v]
        return [f"::add-mask::{_escape_command_data(v)}" for v in lines]

    def scrub_file(self, path: Path) -> bool:
        """Mask the values in a text file (whatever its name: Hydra's config.yaml, train.out, …);
        True when it changed. Left alone: links (an output's link could point anywhere on this
        computer), anything but a regular file, a file with a NUL in its first 8 KiB (binary: a
        checkpoint), and one over SCRUB_MAX_BYTES."""
        import os
        from .regular_files import open_regular
        if not self:
            return False           # nothing to mask: no file need be read
        try:
            fd = open_regular(path)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if st.st_size > SCRUB_MAX_BYTES or b"\0" in handle.read(8192):
                return False
            handle.seek(0)
            text = handle.read().decode("utf-8", errors="surrogateescape")
        clean = self(text)
        if clean == text:
            return False
        # Written beside it and renamed over it: the file is whole at every moment (a crash mid-way
        # lost the log), and a link put at its name since it was read is replaced, never followed.
        tmp = path.with_name(f".{path.name}.scrub-{os.getpid()}-{os.urandom(4).hex()}")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, st.st_mode & 0o777)
        try:
            with os.fdopen(out, "wb") as handle:
                handle.write(clean.encode("utf-8", errors="surrogateescape"))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return True


def _escape_command_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
