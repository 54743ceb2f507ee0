"""Test modules are imported by their base name (tests/unit, tests/e2e, … are not packages), so two
files of one name in different folders stop the whole suite at collection ("import file mismatch")."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_name_of_its_own():
    names = Counter(p.name for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []
