"""The options commands share (--layer, --config and the read limits, the input options) and the
edge where a report becomes printed text.

May import: click, the API (grucli.api), output/emit, files/budget, errors.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from grucli.files.budget import MIB, Limits

if TYPE_CHECKING:
    from grucli.api import Model

from grucli.cli.app import CliError, F, say


@dataclasses.dataclass(frozen=True)
class Reading:
    """How a command reads its model files: every read limit, and --config for a weights-only file."""

    limits: Limits
    config_path: Path | None


# The options that make up a Reading (the byte limits are given in MiB).
LIMIT_OPTIONS = ("max_mb", "max_layers", "max_config_bytes", "max_total_bytes", "max_input_bytes", "max_timesteps")


def model_argument(function: F) -> F:
    function = reading_options(function)
    return click.argument("model", metavar="MODEL", type=click.Path(path_type=Path))(function)


def reading_options(function: F) -> F:
    """--config and the read limits, handed to the command as one `reading` argument."""

    @functools.wraps(function)
    def command(**kwargs: Any) -> Any:
        chosen = {name: kwargs.pop(name) for name in LIMIT_OPTIONS if name in kwargs}
        limits = dataclasses.replace(
            Limits(), **{_limit_field(name): value * MIB if _in_mib(name) else value for name, value in chosen.items()}
        )
        return function(reading=Reading(limits, kwargs.pop("config_path")), **kwargs)

    command = click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        metavar="MODEL.json",
        help="The architecture of a weights-only file: the JSON of model.to_json() or a .keras zip's config.json. "
        "The weights then get their real layer names and classes, and replay and verify work.",
    )(command)
    defaults = Limits()
    for flag, field, default, text in (
        (
            "--max-layers",
            "max_layers",
            defaults.max_layers,
            "Most layers (and checkpoint variables) to read; configs may hold 100 JSON values per layer, checkpoint indexes 50 keys.",
        ),
        (
            "--max-config-mb",
            "max_config_bytes",
            defaults.max_config_bytes // MIB,
            "Largest config, metadata record or checkpoint index to read, in MiB.",
        ),
        (
            "--max-total-mb",
            "max_total_bytes",
            defaults.max_total_bytes // MIB,
            "Most MiB of weight arrays to read from one file, all arrays together.",
        ),
    ):
        command = click.option(flag, field, type=click.IntRange(min=1), default=default, show_default=True, help=text)(command)
    return click.option(
        "--max-mb",
        "max_mb",
        type=click.IntRange(min=1),
        default=4096,
        show_default=True,
        help="Largest weight array or compressed zip member to load, in MiB. Every limit is checked before "
        "reading (model files are untrusted input).",
    )(command)


def _limit_field(option: str) -> str:
    return "max_bytes" if option == "max_mb" else option


def _in_mib(option: str) -> bool:
    return option == "max_mb" or option.endswith("_bytes")


def renamed_trace(value: Path | None) -> None:
    if value is not None:
        raise CliError(
            f"replay --trace {value} is now --gates {value} (it writes every gate's values to an .npz); "
            "--trace prints a per-step table in verify, and grucli explain shows each step's arithmetic"
        )


def load_model(path: Path, reading: Reading, weights_only_sides: bool = False) -> Model:
    """Read a model file through the API, closed again when the command ends (arrays are read lazily).

    With --config the file must be weights-only; `weights_only_sides` (diff) applies it only to
    a file that holds no config of its own."""
    from grucli import api

    config = reading.config_path
    if config is not None and weights_only_sides:
        probe = api.load(path, limits=reading.limits)
        if probe.file.has_config:
            click.get_current_context().call_on_close(probe.close)
            return probe
        probe.close()
    model = api.load(path, config, reading.limits)
    click.get_current_context().call_on_close(model.close)
    return model


def layer_option(function: F) -> F:
    return click.option(
        "--layer",
        "layer_paths",
        multiple=True,
        metavar="PATH",
        help="Only this layer (repeatable). Paths: NAME, NAME/forward and NAME/backward for Bidirectional, "
        "OUTER/INNER for nested models, NAME/cell_K for stacked cells; a prefix selects what is below it.",
    )(function)


def skip_unsliced_option(function: F) -> F:
    return click.option(
        "--skip-unsliced",
        is_flag=True,
        help="Leave out layers that hold recurrent weights grucli cannot slice (a custom cell, say) instead of refusing the file.",
    )(function)


def refuse_unsliced_layers(model: Model, layer_paths: Sequence[str], skip: bool) -> None:
    """A command over every recurrent layer refuses weights it cannot slice, unless told to skip them."""
    from grucli import api

    if not layer_paths:  # all of them: none may be dropped unsaid
        for other in api.refuse_unsliced(model, skip=skip):
            say(f"skipped {other.path} ({other.class_name}): {other.skipped_reason}")
    api.require_recurrent(model)


def binary_output(path: Path | None, what: str) -> str:
    """`-o -` sends the file's bytes to stdout, but never to a terminal, where they would be noise.
    Returns how the confirmation on stderr names the destination."""
    if path is None or str(path) != "-":
        return str(path)
    if sys.stdout.isatty():
        raise CliError(
            f"-o - writes the {what} to stdout, which is a terminal here; redirect it (-o - > out) or pipe it, or give a file path"
        )
    return "stdout"


def input_options(function: F) -> F:
    """--input, --batch, --timesteps, --seed: shared by the commands that run a model."""
    options = [
        click.option(
            "--input",
            "input_path",
            type=click.Path(path_type=Path),
            metavar="X",
            help="Input: .npy, .npz (one named array per model input) or .csv (one sequence: a row per timestep, "
            "a column per feature; a header row is skipped). A single sequence gets a batch axis. "
            "Default: seeded random input of the model's shape.",
        ),
        click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Samples in the random input."),
        click.option(
            "--timesteps",
            type=click.IntRange(min=1),
            default=10,
            show_default=True,
            help="Timesteps of the random input when the model accepts any length.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input."),
        click.option(
            "--max-input-mb",
            "max_input_bytes",
            type=click.IntRange(min=1),
            default=Limits().max_input_bytes // MIB,
            show_default=True,
            help="Largest input (and --expected output) to read, as its headers declare, and largest random input, in MiB.",
        ),
        click.option(
            "--max-timesteps",
            "max_timesteps",
            type=click.IntRange(min=1),
            default=Limits().max_timesteps,
            show_default=True,
            help="Most timesteps of a random input (a config may declare millions).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def output_format(as_json: bool) -> Any:
    from grucli.output.emit import OutputFormat

    return OutputFormat.JSON if as_json else OutputFormat.TEXT


def emit(report: Any, output_format: Any) -> None:
    """Print a report in the format asked for, by its type's formatter (output/emit.py)."""
    from grucli.output.emit import formatted

    print_text(formatted(report, output_format, color=use_color(), width=width()))


def print_text(text: str) -> None:
    try:
        click.echo(text, nl=False)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`grucli inspect ... | head`): not an error of this command,
        # whose exit code (verify's verdict) stays its own. What is left has nowhere to go.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def use_color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def width() -> int:
    text = os.environ.get("COLUMNS", "")
    columns = int(text) if text.isascii() and text.isdigit() and len(text) < 6 else 0  # "²".isdigit() is True
    if sys.stdout.isatty():
        if columns > 0:
            return columns
        try:  # os, not shutil: shutil's import (with bz2 and lzma) costs a small command 1.5 ms
            return os.get_terminal_size(sys.stdout.fileno()).columns or 120
        except (OSError, ValueError):
            return 120
    return columns if columns > 40 else 120


def units_callback(context: click.Context, parameter: click.Parameter, value: str | None) -> list[int] | None:
    """--units 0-15,32: unit numbers and inclusive ranges, in the order given, each once."""
    if value is None:
        return None
    units: list[int] = []
    for part in value.split(","):
        bounds = part.strip().split("-")
        if not part.strip() or len(bounds) > 2 or not all(bound.strip().isdigit() for bound in bounds):
            raise click.BadParameter(f"{value!r} is not a list of units; expected numbers and ranges like 0-15,32")
        first, last = int(bounds[0]), int(bounds[-1])
        if last < first:
            raise click.BadParameter(f"the range {part.strip()} runs backwards; expected FIRST-LAST with FIRST ≤ LAST")
        units += [unit for unit in range(first, last + 1) if unit not in units]
    return units
