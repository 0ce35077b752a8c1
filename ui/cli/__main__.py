"""`python -m ui.cli`: the `firstline` command without the installed console script."""

from ui.cli.main import main

main()
