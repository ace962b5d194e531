"""`python -m daemon` is the same CLI as `redline`."""

from daemon.cli import main

if __name__ == "__main__":  # the ingest reader worker is spawned: it must not re-run the CLI
    main()
