"""`python -m fleet …` is the `fleet` command (where the console script is not on PATH)."""
if __name__ == "__main__":   # importing the package's modules (pydoc, a spawned worker) runs nothing
    from .cli.main import run

    run()
