"""`python -m daemon` is the same CLI as `redline`."""

if __name__ == "__main__":  # imported by nothing else; the CLI is loaded only when run
    from daemon.cli import main

    main()
