"""A refused value is quoted in the error line, and an error line lands in CI logs and on terminals
others see: the password of a URL in it is never shown (red-team finding: `store =
"https://u:TOKEN@minio…"` and a `[data]` source of that form were quoted whole, twice for the data
source, once as the local path it was then taken for)."""
from __future__ import annotations

import pytest

from tests.conftest import run_fleet

TOKEN = "tokHunter2xyz789"


@pytest.mark.parametrize("key, value", [("store", f"https://u:{TOKEN}@minio.example/bucket"),
                                        ("data", f"https://ci:{TOKEN}@files.example/set.tar")])
def test_a_refused_url_is_quoted_without_its_password(tmp_path, fleet_home, key, value):
    table = f'store = "{value}"\n' if key == "store" else f'[data]\nx = "{value}"\n'
    (tmp_path / "fleet.toml").write_text(f'project = "p"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n{table}')
    for debug in ([], ["--debug"]):
        proc = run_fleet([*debug, "up", "--gpus", "1", "--", "true"], cwd=tmp_path, env={"FLEET_HOME": str(fleet_home)},
                         check_no_traceback=not debug)     # --debug: the traceback, without the password
        assert proc.returncode == 2, proc.stderr
        assert TOKEN not in proc.stdout + proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("fleet: error:") and ("u:***@" in last or "ci:***@" in last), last


def test_snapshot_store_option_refused_without_its_password(tmp_path, fleet_home):
    proc = run_fleet(["snapshot", "ls", "--store", f"gs://admin:{TOKEN}@bucket/x"], cwd=tmp_path,
                     env={"FLEET_HOME": str(fleet_home)})
    assert proc.returncode == 2 and TOKEN not in proc.stderr and "gs://admin:***@bucket/x" in proc.stderr


def test_only_the_password_goes():
    from fleet.masking import without_url_passwords
    assert without_url_passwords("no url here: a:b@c") == "no url here: a:b@c"
    assert without_url_passwords("'https://u:p4ss@h/x' and s3://bucket/key") == "'https://u:***@h/x' and s3://bucket/key"
    assert without_url_passwords("/home/me/https:/u:p4ss@h/x)") == "/home/me/https:/u:***@h/x)"
    assert without_url_passwords("ssh://git@github.com/o/r") == "ssh://git@github.com/o/r"


def test_a_warning_quoting_a_url_is_shown_without_its_password(capsys):
    """Warnings go through the run's events (a retried store call quoting its URL): the same rule."""
    from fleet.cli.render import RichEvents
    RichEvents(plain=True).warn(f"store https://u:{TOKEN}@minio.example/b answered 503; retrying")
    err = capsys.readouterr().err
    assert TOKEN not in err and "https://u:***@minio.example/b answered 503" in err, err


def test_a_password_holding_slashes_or_at_signs_goes_whole():
    from fleet.masking import without_url_passwords
    assert without_url_passwords("https://u:ab/cd+ef@minio/x") == "https://u:***@minio/x"   # a raw AWS secret
    assert without_url_passwords("https://u:p@ss@h/x y@z") == "https://u:***@h/x y@z"
    assert without_url_passwords("http://[::1]:8080/x") == "http://[::1]:8080/x"


def test_an_internal_error_under_debug_shows_its_traceback_without_the_password(capsys):
    """--debug on a bug (not a FleetError): the traceback, as Python prints it, but the URL's password
    in the exception is ***."""
    from fleet.cli.guard import guard

    def broken() -> int:
        raise ValueError(f"Invalid endpoint: https://ci:{TOKEN}@minio.example")
    assert guard(broken, debug=True) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: Invalid endpoint: https://ci:***@minio" in err
    assert TOKEN not in err


def test_a_password_holding_a_quote_goes_whole(capsys):
    """A quote is allowed in a URL's password (RFC 3986's sub-delims): Python quotes such a value with
    double quotes (`"postgresql://fleet:ab'cd@db/x"`), and the password was shown whole."""
    from fleet.cli.guard import guard
    from fleet.errors import UsageError
    from fleet.masking import without_url_passwords
    url = f"postgresql://fleet:{TOKEN}'x@db.example/fleet"
    assert without_url_passwords(repr(url)) == '"postgresql://fleet:***@db.example/fleet"'

    def refused() -> int:
        raise UsageError(f"state_url = {url!r}: cannot be reached")
    assert guard(refused, debug=False) == 2
    err = capsys.readouterr().err
    assert TOKEN not in err and "fleet:***@db.example" in err, err


def test_a_long_line_of_url_like_text_is_masked_in_linear_time():
    """An error line quotes what a machine or a user wrote: 128 KB of "a:/:" took the masking 30 s
    (each "scheme:/" scanned to the end of the word for an "@"); a megabyte, hours."""
    import time
    from fleet.masking import without_url_passwords
    began = time.monotonic()
    for text in ("a:/:" * 20000, "@" + "a:/:" * 20000, "x a:/:" * 20000 + "@"):
        assert without_url_passwords(text) == text
    assert without_url_passwords("a:/:" * 20000 + "b@h") == "a:/:***@h"
    assert time.monotonic() - began < 2
