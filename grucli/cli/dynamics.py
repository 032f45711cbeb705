"""The dataset commands: `activations` (a dataset's gates and states into a Zarr store) and `probe`
(diagnostic classifiers on a store). Each parses its options and calls the API.

May import: click, the API, cli/, output/ (writers, progress), errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from grucli.cli.app import CliError, Terminated, cli, say
from grucli.cli.options import Reading, emit, layer_option, load_model, model_argument, output_format
from grucli.errors import StoppedPartWay, counted
from grucli.files.budget import MIB, Limits


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise click.BadParameter("expected names separated by commas, e.g. h,c")
    return names


@cli.command(short_help="A dataset's gates and states, every row and step, into a Zarr store.")
@model_argument
@click.option(
    "--input",
    "data_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="DATA",
    help="The dataset: .npy (rows first), .npz from np.savez (one array per model input), a folder of .npy shards "
    "(rows in name order) or a Zarr array (a Zarr group: one array per input). Read a batch at a time, never whole.",
)
@click.option(
    "-o", "--output", "store", type=click.Path(path_type=Path), required=True, metavar="ACTS", help="The Zarr store to write (a folder)."
)
@layer_option
@click.option(
    "--only",
    "names",
    metavar="NAMES",
    callback=_names,
    help="Only these traced values, e.g. h,c (GRU z, r, hh, h; LSTM i, f, cc, c, o, h; SimpleRNN h). Default: all.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Rows a batch (the unit of memory, of a chunk and of a Dask task). Default: up to 256, as 256 MiB of traced values allow.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float64"]),
    default="float32",
    show_default=True,
    help="Precision of the replay and the store.",
)
@click.option("--resume", is_flag=True, help="Complete ACTS, which an interrupted run of the same command left.")
@click.option("--force", is_flag=True, help="Replace ACTS if it exists (a store or a file; never another folder).")
@click.option("--workers", type=click.IntRange(min=1), help="Run the batches on a local Dask cluster of N worker processes.")
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run the batches on the Dask cluster at ADDRESS (tcp://host:8786); its workers must read MODEL, DATA and ACTS at the same paths.",
)
@click.option(
    "--max-input-mb",
    "max_input_bytes",
    type=click.IntRange(min=1),
    default=Limits().max_input_bytes // MIB,
    show_default=True,
    help="Largest batch of rows (and Zarr chunk) to read at once, in MiB.",
)
@click.option(
    "--max-dataset-gb",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Largest dataset to read, as its headers declare, in GiB.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (the store's settings and the run) instead of a table.")
def activations(
    model: Path,
    data_path: Path,
    store: Path,
    layer_paths: Sequence[str],
    names: tuple[str, ...],
    batch_size: int | None,
    dtype: str,
    resume: bool,
    force: bool,
    workers: int | None,
    scheduler: str | None,
    max_dataset_gb: int,
    as_json: bool,
    reading: Reading,
) -> None:
    """Write every recurrent layer's gates and states for every row and step of DATA to the Zarr
    store ACTS, computed by the replay with the definitions of the Keras that saved MODEL.

    ACTS holds one array per layer and name, ACTS/<layer path>/<name> of shape (rows, steps,
    units) (GRU z, r, hh, h; LSTM i, f, cc, c, o, h; SimpleRNN h), ACTS/<layer path>/mask and
    ACTS/mask where the model masks (True at real steps), and attributes naming the model (its
    SHA-256), the data, the Keras definitions, the dtype and which steps are masked. Readable
    with zarr, xarray or Dask from any language; `grucli probe` and `plot --trajectories` read it.

    Rows stream through a batch at a time, so memory is one batch's. Ctrl-C leaves a store
    whose attributes say how many rows are complete; --resume completes it. --workers N (a
    local cluster) or --scheduler ADDRESS runs the batches on Dask and writes the same store.

    \b
    Examples:
      grucli activations model.keras --input data.npy -o acts.zarr
      grucli activations model.keras --input shards/ -o acts.zarr --layer encoder --only h,c
      grucli activations model.keras --input data.npy -o acts.zarr --workers 2
      grucli activations model.keras --input data.npy -o acts.zarr --resume
    """
    from grucli import api
    from grucli.output.progress import RowsProgress

    if workers is not None and scheduler is not None:
        raise CliError("--workers starts a local cluster and --scheduler names one; expected one of them")
    if resume and force:
        raise CliError("--resume completes ACTS and --force replaces it; expected one of them")
    limits = reading.limits  # --max-input-mb among them
    loaded = load_model(model, reading)
    with RowsProgress("activations") as progress:
        try:
            report = api.activations(
                loaded,
                data_path,
                store,
                layer_paths,
                names,
                batch_size,
                dtype,
                resume,
                force,
                scheduler,
                workers,
                limits,
                max_dataset_gb << 30,
                progress,
            )
        except (KeyboardInterrupt, Terminated) as stop:
            raise _stopped(store, stop) from None
    emit(report, output_format(as_json))


def _stopped(store: Path, stop: BaseException) -> StoppedPartWay:
    """What an interrupted run left, said in the one error line."""
    from grucli import api
    from grucli.errors import GrucliError

    code, word = (130, "interrupted (Ctrl-C)") if isinstance(stop, KeyboardInterrupt) else (143, "terminated (SIGTERM)")
    try:
        kept = api.open_activations(store)
        left = (
            f"{store} holds {kept.progress.rows_complete} of {kept.settings.rows} rows; run the same command with --resume to complete it"
        )
    except GrucliError:
        left = f"{store} was not begun"
    return StoppedPartWay(f"{word}; {left}", code)


@cli.command(short_help="Diagnostic classifiers on stored states, against control tasks.")
@click.argument("store", metavar="ACTS", type=click.Path(path_type=Path))
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="Y.npy",
    help="One label a sequence (N,), probed at each sequence's final state, or one a step (N, T). "
    "Integers, booleans or strings are classes; floats are numbers (see --task).",
)
@layer_option
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="NAME",
    help="The stored value to probe (repeatable): h, c (default: both, where stored), or a gate (z, r, hh, i, f, cc, o).",
)
@click.option("--per-step", is_flag=True, help="With (N, T) labels: one probe a step (default: one pooled over every real step).")
@click.option(
    "--task",
    type=click.Choice(["classification", "regression"]),
    help="LogisticRegression (accuracy) or Ridge (R²). Default: from the labels' dtype.",
)
@click.option(
    "--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Folds of sequences (a sequence's steps never span two)."
)
@click.option(
    "--control",
    type=click.Choice(["permutation", "type"]),
    default="permutation",
    show_default=True,
    help="permutation: labels shuffled across sequences (within each step); type: each input id gets a random label (needs --input).",
)
@click.option(
    "--input",
    "data_path",
    type=click.Path(path_type=Path),
    metavar="DATA",
    help="The data the store was computed from (token ids), for --control type.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the folds, the control labels and sampling.")
@click.option(
    "--max-rows",
    type=click.IntRange(min=10),
    default=100_000,
    show_default=True,
    help="Most rows a probe fits on, sampled with the seed (the output says so).",
)
@click.option("--top", type=click.IntRange(min=0), default=5, show_default=True, help="Units with the largest weights to name per probe.")
@click.option(
    "--regularization",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="LogisticRegression's C, Ridge's alpha.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), metavar="CURVES.png", help="Also draw the scores (per step: curves) to a PNG."
)
@click.option("--force", is_flag=True, help="Overwrite CURVES.png if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (schema in docs/json.md) instead of a table.")
@click.option(
    "--max-input-mb",
    "max_input_bytes",
    type=click.IntRange(min=1),
    default=Limits().max_input_bytes // MIB,
    show_default=True,
    help="Largest labels file (and store chunk) to read, in MiB.",
)
def probe(
    store: Path,
    labels_path: Path,
    layer_paths: Sequence[str],
    states: Sequence[str],
    per_step: bool,
    task: str | None,
    folds: int,
    control: str,
    data_path: Path | None,
    seed: int,
    max_rows: int,
    top: int,
    regularization: float,
    output: Path | None,
    force: bool,
    as_json: bool,
    max_input_bytes: int,
) -> None:
    """Train linear diagnostic classifiers on the states stored in ACTS (by `grucli activations`)
    to predict Y, cross-validated over folds of sequences, each beside a control task.

    For each layer × state (× step): the score (accuracy for classes, R² for numbers; mean ± std
    over folds), the control task's score (the same probe on labels that carry no information
    about the input), selectivity = score − control score, and the units with the largest
    weights. A high score with a low control score means the states encode Y linearly;
    docs/dynamics.md says what each number means and cites the methods.

    \b
    Examples:
      grucli probe acts.zarr --labels count.npy
      grucli probe acts.zarr --labels count_per_step.npy --per-step -o curves.png
      grucli probe acts.zarr --labels pos.npy --control type --input tokens.npy --json
    """
    from grucli import api

    if output is not None and output.exists() and not force:
        raise CliError(f"{output} already exists; pass --force to overwrite it")
    if data_path is not None and control != "type":
        raise CliError("--input gives the token ids of --control type; expected --control type with it")
    report = api.probe(
        store,
        labels_path,
        layer_paths,
        states,
        per_step,
        task,
        folds,
        seed,
        control,
        data_path,
        max_rows,
        top,
        regularization,
        Limits(max_input_bytes=max_input_bytes * MIB),
    )
    if output is not None:
        from grucli.output.dynamics import write_probe_curves

        write_probe_curves(report, output, force=force)
    emit(report, output_format(as_json))
    if output is not None:
        say(f"wrote {output}: the scores of {counted(len(report.results), 'probe')}")
