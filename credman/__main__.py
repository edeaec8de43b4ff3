"""``python -m credman``: the command line."""

from credman.cli import main

main()
