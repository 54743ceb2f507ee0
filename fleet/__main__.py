"""`python -m fleet …` is the `fleet` command (where the console script is not on PATH)."""
from .cli.main import run

run()
