"""The `grucli` command line: parses options, calls the Python API (`grucli.api`), prints what it
returns (`output.emit`) and turns grucli's errors into exit codes. The only package that imports Click.

Exit codes: 0 success; 1 a check found something (verify, check, diff --exit-code); 2 usage
errors and files or inputs that cannot be used, with one `Error: ...` line on stderr; 3 an
internal error (a bug in grucli); 130/143 interrupted. Data goes to stdout, diagnostics to stderr.

May import: click, the API (grucli.api), output/, commands/ (option records), files/budget, errors.
"""

from grucli.cli import (
    commands,  # noqa: F401 - registers the commands on the group
    dynamics,  # noqa: F401 - registers activations and probe
)
from grucli.cli.app import INTERNAL_ERROR, CliError, cli, main

__all__ = ["INTERNAL_ERROR", "CliError", "cli", "main"]
