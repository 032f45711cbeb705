"""The command group: turns grucli's errors into one `Error:` line and exit codes, and ends the process.

Exit codes: 0 success; 1 a check found something (verify, check, diff --exit-code); 2 usage
errors and files or inputs that cannot be used, with one `Error: ...` line on stderr; 3 an
internal error (a bug in grucli); 130/143 interrupted. Data goes to stdout, diagnostics to stderr.

May import: click, errors, and (for --version) the package.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from grucli.errors import GrucliError, StoppedPartWay, describe, printable
from grucli.version import __version__

INTERNAL_ERROR = 3  # a bug in grucli, as opposed to 2: something the user can fix

F = Callable[..., Any]


class CliError(click.ClickException):
    """A user-caused failure: `Error: <message>` on stderr and exit code 2; one line, whatever names
    from the file the message holds."""

    exit_code = 2

    def format_message(self) -> str:
        return printable(self.message)


def say(text: str) -> None:
    """A diagnostic line on stderr (names from files escaped)."""
    click.echo(printable(text), err=True)


class Terminated(BaseException):
    """SIGTERM arrived (a CI runner cancelling the job)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


class GrucliGroup(click.Group):
    """Turns library errors into one `Error:` line and exit code 2; any other exception is a bug
    in grucli, reported as an internal error with exit code 3 (traceback with GRUCLI_DEBUG=1).

    Ctrl-C and SIGTERM end the command with 130 and 143 and one line, no traceback; outputs
    are written atomically, so an interrupted command leaves none behind.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order a newcomer meets them, not alphabetical

    def invoke(self, ctx: click.Context) -> Any:
        try:
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            return super().invoke(ctx)
        except GrucliError as exc:
            raise CliError(str(exc)) from None
        except StoppedPartWay as stop:
            click.echo(f"Error: {printable(str(stop))}", err=True)
            raise click.exceptions.Exit(stop.code) from None
        except KeyboardInterrupt:
            click.echo("Error: interrupted (Ctrl-C); nothing was written", err=True)
            raise click.exceptions.Exit(130) from None
        except Terminated:
            click.echo("Error: terminated (SIGTERM); nothing was written", err=True)
            raise click.exceptions.Exit(143) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except MemoryError:
            raise CliError("out of memory; expected inputs that fit in memory (see --max-mb)") from None
        except Exception as exc:  # noqa: BLE001 - a bug in grucli: said so, never passed off as a bad file
            debug = bool(os.environ.get("GRUCLI_DEBUG"))
            hint = "" if debug else " (GRUCLI_DEBUG=1 shows the traceback)"
            say(f"Error: internal error in grucli (please report it): {describe(exc)}{hint}")
            if debug:
                traceback.print_exc()
            raise click.exceptions.Exit(INTERNAL_ERROR) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


@click.group(cls=GrucliGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="grucli")
def cli() -> None:
    """Read and check the weights of Keras recurrent layers (GRU, LSTM, SimpleRNN).

    Reads .keras and .h5/.hdf5 files (Keras 1, 2, tf.keras and Keras 3, full models and
    weights-only files, CuDNN layers), TensorFlow checkpoints and SavedModel folders
    directly, without TensorFlow.

    \b
    Start with:
      grucli inspect MODEL                 which number is which gate
      grucli explain MODEL --input X.csv   one unit, step by step
      grucli verify MODEL --input X.npy    the replay against predict
    Each command's --help has its options and examples.
    """


def main() -> None:
    """The `grucli` command: runs one command, then ends the process at once."""
    # One command, then exit: start-up creates some 10^5 long-lived objects (modules, classes) that
    # the default thresholds would rescan for cycles about 70 times, some 6 ms of a small command.
    gc.set_threshold(100_000, 50, 100)
    try:
        cli(prog_name="grucli")
    except SystemExit as exit:
        exit_now(exit.code)


def exit_now(code: object) -> None:
    """Exit without the interpreter's teardown of NumPy, h5py and Rich: 30 ms, a fifth of a small
    command (mypy's fast exit does the same). Outputs are complete and closed by now (written
    atomically; model files closed with the command's context); only the std streams buffer."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if FRAMEWORK_MODULES & sys.modules.keys():
        # TensorFlow's clean-up runs at exit (autograph deletes its /tmp/__autograph_generated_file*.py
        # there): a command that loaded a framework ends as Python ends, less only the teardown.
        import atexit

        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):  # the reader went away (`| head`), or the stream is closed
            stream.flush()
    os._exit(code or 0)


FRAMEWORK_MODULES = frozenset({"tensorflow", "keras", "tf_keras", "torch", "jax"})
