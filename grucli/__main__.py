"""`python -m grucli` runs the command-line interface."""

from grucli.cli import main

main()
