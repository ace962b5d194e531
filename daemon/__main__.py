"""`python -m daemon` is the same CLI as `redline`."""

from daemon.cli import main

main()
