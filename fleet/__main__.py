"""`python -m fleet …` is the `fleet` command (where the console script is not on PATH)."""
if __name__ == "__main__":   # importing the package's modules (pydoc, a spawned worker) runs nothing
    import os
    import sys
    # `-m` put the working directory first on sys.path, and fleet is run in repositories that are
    # often someone else's: a json.py or typer.py there was imported in place of the real one (code
    # of the repository's running here). The console script never had it; fleet itself is found already.
    try:
        here = os.getcwd()
    except OSError:   # the directory was removed under the shell: `fleet --version` still answers
        here = ""
    if not sys.flags.safe_path and sys.path and sys.path[0] in ("", here):
        del sys.path[0]
    from .cli.main import run

    run()
