"""A password inside a URL value of [env] is a secret whatever the variable is called; masked where it
sits in the URL, and on its own only when it looks generated (never a word that other text holds)."""
from __future__ import annotations

from types import SimpleNamespace

from fleet.masking import Masker


def _masker(**env) -> Masker:
    return Masker.for_config(SimpleNamespace(secrets=[], env=env), environ={})


def test_a_short_password_is_masked_in_its_url_only():
    m = _masker(DATABASE_URL="postgresql://u:pw@db:5432/x")
    assert m("connect postgresql://u:pw@db:5432/x; pw is not a secret elsewhere") == \
        "connect postgresql://u:***@db:5432/x; pw is not a secret elsewhere"
    assert m.github_commands() == []          # ::add-mask::pw would blank every "pw" in a CI log


def test_a_word_as_password_does_not_mask_the_word_elsewhere():
    m = _masker(DATABASE_URL="postgresql://postgres:postgres@localhost/x")
    assert m("--backend postgres postgresql://postgres:postgres@localhost/x") == \
        "--backend postgres postgresql://postgres:***@localhost/x"


def test_a_generated_password_is_masked_everywhere_and_an_at_sign_in_it_does_not_cut_it():
    m = _masker(URI="https://me:Xk9#p@ss2Lq7Zw@mlflow.example/x")
    assert m("https://me:Xk9#p@ss2Lq7Zw@mlflow.example/x and Xk9#p@ss2Lq7Zw") == \
        "https://me:***@mlflow.example/x and ***"
    assert m.github_commands() == ["::add-mask::Xk9#p@ss2Lq7Zw"]


def test_a_secret_of_several_lines_is_registered_line_by_line_never_whole():
    """GitHub reads one workflow command per line: `::add-mask::` with a raw newline registered only
    the first line, and the rest of the value (a private key) went to the job log in clear."""
    key = '{\n  "type": "service_account",\n  "private_key": "MIIEvQIBADANBgkq%0Ahk"\n}'
    commands = Masker([key]).github_commands()
    assert all("\n" not in c and "\r" not in c for c in commands)
    assert commands == ['::add-mask::"private_key": "MIIEvQIBADANBgkq%250Ahk"', '::add-mask::"type": "service_account",']
