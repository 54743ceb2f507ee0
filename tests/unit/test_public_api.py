"""The library is usable by import, without the CLI, and importing it stays cheap."""
from __future__ import annotations

import subprocess
import sys


def test_public_names_resolve():
    import fleet
    for name in fleet.__all__:
        assert callable(getattr(fleet, name)) or isinstance(getattr(fleet, name), type)


def test_import_fleet_and_the_cli_do_not_pull_heavy_modules():
    code = ("import sys, fleet, fleet.cli.main; "
            "heavy = [m for m in ('boto3', 'botocore', 'paramiko', 'pulumi', 'psycopg', 'plotly') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
