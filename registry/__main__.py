"""`python -m registry`: the same command as `registry`."""

from registry.cli.main import main

main()
