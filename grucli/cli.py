"""The `grucli` command line: parses options, calls the library, turns its errors into exit codes.

Exit codes: 0 success; 1 a check found something (verify, check, diff --exit-code); 2 usage
errors and files or inputs that cannot be used, with one `Error: ...` line on stderr; 3 an
internal error (a bug in grucli); 130/143 interrupted. Data goes to stdout, diagnostics to stderr.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from grucli import __version__
from grucli.errors import GrucliError, describe, printable
from grucli.files.budget import MIB, Limits

INTERNAL_ERROR = 3  # a bug in grucli, as opposed to 2: something the user can fix

F = Callable[..., Any]


class CliError(click.ClickException):
    """A user-caused failure: `Error: <message>` on stderr and exit code 2; one line, whatever names
    from the file the message holds."""

    exit_code = 2

    def format_message(self) -> str:
        return printable(self.message)


def _say(text: str) -> None:
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
            _say(f"Error: internal error in grucli (please report it): {describe(exc)}{hint}")
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


def model_argument(function: F) -> F:
    function = limits_option(function)
    return click.argument("model", metavar="MODEL", type=click.Path(path_type=Path))(function)


def limits_option(function: F) -> F:
    function = click.option(
        "--config", "config_path", type=click.Path(path_type=Path), metavar="MODEL.json", expose_value=False,
        callback=_remember_config,
        help="The architecture of a weights-only file: the JSON of model.to_json() or a .keras zip's config.json. "
        "The weights then get their real layer names and classes, and replay and verify work.",
    )(function)
    defaults = Limits()
    for flag, field, default, text in (
        ("--max-layers", "max_layers", defaults.max_layers,
         "Most layers (and checkpoint variables) to read; configs may hold 100 JSON values per layer, checkpoint indexes 50 keys."),
        ("--max-config-mb", "max_config_bytes", defaults.max_config_bytes // MIB,
         "Largest config, metadata record or checkpoint index to read, in MiB."),
        ("--max-total-mb", "max_total_bytes", defaults.max_total_bytes // MIB,
         "Most MiB of weight arrays to read from one file, all arrays together."),
    ):
        function = click.option(flag, field, type=click.IntRange(min=1), default=default, show_default=True, expose_value=False,
                                callback=_remember_limit, help=text)(function)
    return click.option(
        "--max-mb", "max_mb", type=click.IntRange(min=1), default=4096, show_default=True,
        help="Largest weight array or compressed zip member to load, in MiB. Every limit is checked before "
        "reading (model files are untrusted input).",
    )(function)


def _remember_limit(ctx: click.Context, param: click.Parameter, value: int) -> int:
    # Byte limits are given in MiB; each is applied by `_limits` when the command reads.
    ctx.meta.setdefault("grucli_limits", {})[param.name] = value * MIB if str(param.name).endswith("_bytes") else value
    return value


def _limits(max_mb: int) -> Limits:
    """Every read limit of the command line: --max-mb and the others its options remembered."""
    chosen = click.get_current_context().meta.get("grucli_limits", {})
    return dataclasses.replace(Limits(), max_bytes=max_mb * MIB, **chosen)


def _renamed_trace(value: Path | None) -> None:
    if value is not None:
        raise CliError(f"replay --trace {value} is now --gates {value} (it writes every gate's values to an .npz); "
                       "--trace prints a per-step table in verify, and grucli explain shows each step's arithmetic")


def _remember_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    # Every command that reads a model takes --config; `_read` applies it.
    ctx.meta["grucli_config"] = value
    return value


def _config_path() -> Path | None:
    return click.get_current_context().meta.get("grucli_config")


def _read(path: Path, max_mb: int, weights_only_sides: bool = False) -> Any:
    """Read a model file, closed again when the command ends (arrays are read from it lazily).

    With --config the file must be weights-only; `weights_only_sides` (diff) applies it only to
    a file that holds no config of its own."""
    from grucli.files.reader import read_model

    limits = _limits(max_mb)
    config = _config_path()
    if config is not None and weights_only_sides:
        probe = read_model(path, limits)
        if probe.has_config:
            click.get_current_context().call_on_close(probe.close)
            return probe
        probe.close()
    model_file = read_model(path, limits, config)
    click.get_current_context().call_on_close(model_file.close)
    return model_file


def layer_option(function: F) -> F:
    return click.option(
        "--layer", "layer_paths", multiple=True, metavar="PATH",
        help="Only this layer (repeatable). Paths: NAME, NAME/forward and NAME/backward for Bidirectional, "
        "OUTER/INNER for nested models, NAME/cell_K for stacked cells; a prefix selects what is below it.",
    )(function)


def skip_unsliced_option(function: F) -> F:
    return click.option(
        "--skip-unsliced", is_flag=True,
        help="Leave out layers that hold recurrent weights grucli cannot slice (a custom cell, say) instead of refusing the file.",
    )(function)


def _refuse_unsliced(found: Any, layer_paths: Sequence[str], skip: bool) -> None:
    """A command over every recurrent layer refuses weights it cannot slice, unless told to skip them."""
    from grucli.model.layers import refuse_unsliced, require_recurrent

    if not layer_paths:  # all of them: none may be dropped unsaid
        for other in refuse_unsliced(found, skip=skip):
            _say(f"skipped {other.path} ({other.class_name}): {other.skipped_reason}")
    require_recurrent(found)


def _binary_output(path: Path | None, what: str) -> str:
    """`-o -` sends the file's bytes to stdout, but never to a terminal, where they would be noise.
    Returns how the confirmation on stderr names the destination."""
    if path is None or str(path) != "-":
        return str(path)
    if sys.stdout.isatty():
        raise CliError(f"-o - writes the {what} to stdout, which is a terminal here; redirect it (-o - > out) or pipe it, "
                       "or give a file path")
    return "stdout"


def input_options(function: F) -> F:
    """--input, --batch, --timesteps, --seed: shared by the commands that run a model."""
    options = [
        click.option("--input", "input_path", type=click.Path(path_type=Path), metavar="X",
                     help="Input: .npy, .npz (one named array per model input) or .csv (one sequence: a row per timestep, "
                     "a column per feature; a header row is skipped). A single sequence gets a batch axis. "
                     "Default: seeded random input of the model's shape."),
        click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Samples in the random input."),
        click.option("--timesteps", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Timesteps of the random input when the model accepts any length."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input."),
        click.option("--max-input-mb", "max_input_bytes", type=click.IntRange(min=1), default=Limits().max_input_bytes // MIB,
                     show_default=True, expose_value=False, callback=_remember_limit,
                     help="Largest input (and --expected output) to read, as its headers declare, and largest random input, in MiB."),
        click.option("--max-timesteps", "max_timesteps", type=click.IntRange(min=1), default=Limits().max_timesteps,
                     show_default=True, expose_value=False, callback=_remember_limit,
                     help="Most timesteps of a random input (a config may declare millions)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@cli.command(short_help="Every recurrent layer's weights, labelled by gate and unit.")
@model_argument
@layer_option
@click.option("--gate", "gate_names", multiple=True, metavar="G",
              help="Only this gate (repeatable): z, r, h for GRU; i, f, c, o for LSTM; h for SimpleRNN.")
@click.option("--unit", type=int, metavar="N",
              help="Only unit N: its column in every gate, i.e. the weights that feed unit N.")
@click.option("--values", "with_values", is_flag=True,
              help="Also print the numbers, rows and columns labelled (large matrices elided; --json has all).")
@click.option("--heatmap", is_flag=True,
              help="Draw each gate's matrices as colour heatmaps (blue negative, red positive; one scale per layer).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (schema in docs/json.md) instead of tables.")
def inspect(model: Path, layer_paths: Sequence[str], gate_names: Sequence[str], unit: int | None, with_values: bool,
            heatmap: bool, as_json: bool, max_mb: int) -> None:
    """Show every recurrent layer of MODEL, sliced by gate and unit, with shapes and statistics.

    \b
    Examples:
      grucli inspect model.h5
      grucli inspect model.keras --layer bi/forward --gate z --values
      grucli inspect model.h5 --unit 3 --values      # the weights feeding unit 3
      grucli inspect model.keras --json | jq '.layers[].path'
      grucli inspect model.keras --layer gru --heatmap
    """
    from grucli.commands.inspect import build_inspect_report
    from grucli.model.layers import find_layers

    report = build_inspect_report(find_layers(_read(model, max_mb)), layer_paths, gate_names, unit, with_values or heatmap)
    _emit(report, as_json, "inspect_json", "render_heatmaps" if heatmap else "render_inspect")


@cli.command(short_help="One unit of one layer, step by step: every number of its arithmetic.")
@model_argument
@input_options
@click.option("--layer", "layer_path", metavar="PATH",
              help="The recurrent layer (default: the model's first): NAME, NAME/forward or NAME/backward, OUTER/INNER, NAME/cell_K.")
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True, help="The sample of the input to follow.")
@click.option("--unit", type=click.IntRange(min=0), default=0, show_default=True, help="The unit to follow.")
@click.option("--keras", "framework", type=click.Choice(["auto", "keras", "tf-keras", "none"]), default="auto", show_default=True,
              help="Who computes the reference output at the end: auto is predict when Keras is installed (as in verify), "
              "else grucli's replay; none never imports Keras (fast).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (equations, steps, output) instead of text.")
def explain(model: Path, input_path: Path | None, batch: int, timesteps: int, seed: int, layer_path: str | None, sample: int,
            unit: int, framework: str, as_json: bool, max_mb: int) -> None:
    """Follow one unit of one recurrent layer through every timestep, with every number.

    The layer's exact equations stand once at the top. Then, for each timestep in the order
    the layer consumes them (from the last for go_backwards and backward directions): the
    input x, the whole previous state h_prev (and c_prev), each gate's pre-activation as the
    sum of its terms in the equation's order (x·W_g, h_prev·U_g, b_g, rb_g), the activation,
    the candidate and the new state. Layers of at most 4 units and 8 inputs also show every
    product and every unit's values. It ends with the unit's output beside predict's (when
    Keras is installed) or the replay's. Needs no TensorFlow (--keras none).

    \b
    Examples:
      grucli explain model.keras --input seq.csv
      grucli explain model.h5 --input x.npy --layer bi/backward --unit 3
      grucli explain model.keras --input seq.npy --json | jq '.steps[-1].h'
    """
    from grucli.commands.explain import ExplainOptions
    from grucli.commands.explain import explain as run_explain

    options = ExplainOptions(input_path, batch, timesteps, seed, layer_path, sample, unit, framework, _limits(max_mb))
    _emit(run_explain(_read(model, max_mb), options), as_json, "explain_json", "render_explain")


@cli.command(short_help='Write every gate slice (or PyTorch state_dicts) to an .npz.')
@model_argument
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, metavar="OUT.npz",
              help="The .npz file to write; - writes it to stdout (piped or redirected, never to a terminal).")
@layer_option
@click.option("--layout", type=click.Choice(["keras", "torch"]), default="keras", show_default=True,
              help="keras: every gate slice as {path}/{gate}/{array}. torch: PyTorch nn.GRU/nn.LSTM/nn.RNN "
              "state_dict arrays as {path}/weight_ih_l0 ..., plus {path}/constructor.")
@click.option("--approximate", is_flag=True,
              help="With --layout torch: export reset_after=False GRUs too, which no nn.GRU reproduces exactly.")
@skip_unsliced_option
@click.option("--force", is_flag=True, help="Overwrite OUT.npz if it exists.")
def export(model: Path, output: Path, layer_paths: Sequence[str], layout: str, approximate: bool, skip_unsliced: bool, force: bool,
           max_mb: int) -> None:
    """Write every gate slice of MODEL's recurrent layers to an .npz file.

    Keys are {layer path}/{gate}/{array}, e.g. bi/forward/z/recurrent_kernel; arrays are
    kernel (input_dim, units), recurrent_kernel (units, units), bias (units,) and, for a GRU
    with reset_after=True, recurrent_bias (units,). Values equal the slices of Keras's own
    get_weights() exactly. The file is written atomically and never overwritten without --force.

    With --layout torch the arrays are a PyTorch state_dict per layer (gate order r, z, n for a
    GRU, matrices transposed), keyed {layer path}/weight_ih_l0 and so on, with the nn.* constructor
    that reproduces the layer in {layer path}/constructor.

    \b
    Examples:
      grucli export model.h5 -o gates.npz
      python -c "import numpy as np; print(np.load('gates.npz')['gru/z/kernel'])"
      grucli export model.keras --layout torch -o torch_weights.npz
    """
    from grucli.commands.inspect import select_layers
    from grucli.model.gates import gate_export
    from grucli.model.layers import find_layers
    from grucli.output.formats import write_npz, write_npz_pieces

    destination = _binary_output(output, ".npz file")
    found = find_layers(_read(model, max_mb))
    _refuse_unsliced(found, layer_paths, skip_unsliced)
    layers = select_layers(found.recurrent, layer_paths)
    if layout == "torch":
        import numpy as np

        from grucli.commands.torch_layout import torch_modules

        modules = torch_modules(layers, approximate=approximate)
        arrays = {}
        for module in modules:
            arrays.update(module.arrays)
            arrays[f"{module.path}/constructor"] = np.array(module.constructor)
            _say(f"{module.path}: {module.constructor}")
            for note in module.notes:
                _say(f"  note: {note}")
        write_npz(output, arrays, force=force)
        count = len(arrays)
    else:
        specs, pieces = gate_export(layers)
        write_npz_pieces(output, specs, pieces, force=force)
        count = len(specs)
    _say(f"wrote {count} arrays from {len(layers)} layer(s) to {destination}")


@cli.command(short_help='Replay each recurrent layer in NumPy and diff against predict.')
@model_argument
@input_options
@click.option("--expected", "expected_path", type=click.Path(path_type=Path), metavar="REF.npy",
              help="Also compare the replay and predict with this stored output (.npy, or .npz for several outputs).")
@click.option("--atol", type=float, help="Absolute tolerance. Default 1e-5 on a CPU, 2e-3 on a GPU (TF32 products).")
@click.option("--rtol", type=float, help="Relative tolerance (times |predict|). Default 1e-5 on a CPU, 1e-3 on a GPU.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Precision of the NumPy replay.")
@layer_option
@click.option("--trace", is_flag=True, help="Print each timestep's input, gate values and state for one sample and unit "
              "(grucli explain also shows each step's arithmetic).")
@click.option("--sample", type=int, default=0, show_default=True, help="Sample shown by --trace.")
@click.option("--unit", type=int, default=0, show_default=True, help="Unit shown by --trace.")
@click.option("--keras", "framework", type=click.Choice(["auto", "keras", "tf-keras"]), default="auto", show_default=True,
              help="Framework that runs predict: auto picks the file's own generation (tf-keras for Keras 1/2 and "
              "tf.keras 2 files when it is installed, else Keras 3); keras is Keras 3 (backend from KERAS_BACKEND, "
              "default tensorflow); tf-keras keeps the Keras 2 definitions, e.g. of hard_sigmoid.")
@click.option("--unsafe", is_flag=True, help="Allow loading models with Lambda layers: runs Python code from the file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schema in docs/json.md) instead of tables.")
def verify(model: Path, input_path: Path | None, batch: int, timesteps: int, seed: int, expected_path: Path | None,
           atol: float | None, rtol: float | None, dtype: str, layer_paths: Sequence[str], trace: bool, sample: int,
           unit: int, framework: str, unsafe: bool, as_json: bool, max_mb: int) -> None:
    """Replay MODEL's recurrent layers in NumPy and diff against Keras's predict.

    Each recurrent layer is replayed on its real input (taken from the framework) and compared
    with its real output, per sample, timestep and unit; the whole model is replayed end to end
    when every layer is one the replay can run; --expected adds a stored reference output.

    Exit codes: 0 every recurrent layer in scope compared and every comparison passed; 1 a
    comparison failed, a layer in scope could not be compared (named, with the reason), NaN/Inf
    appeared, or the installed Keras defines an activation differently from the Keras that
    saved the file; 2 unusable file or input, or no recurrent layer; 3 internal error.

    \b
    Examples:
      grucli verify model.keras --input seq.npy
      grucli verify old_model.h5 --keras tf-keras --expected ref.npy --json
      grucli verify model.keras --trace --sample 0 --unit 3
    """
    from grucli.commands.verify import verify as run_verify
    from grucli.commands.verify_report import VerifyOptions

    if unsafe:
        click.echo("warning: --unsafe lets the model file run Python code on this machine; use it only for files you trust", err=True)
    options = VerifyOptions(
        input_path=input_path, expected_path=expected_path, atol=atol, rtol=rtol, dtype=dtype, batch=batch,
        timesteps=timesteps, seed=seed, trace=trace, sample=sample, unit=unit, layer_paths=tuple(layer_paths),
        framework=framework, unsafe=unsafe, limits=_limits(max_mb), config_path=_config_path(),
    )
    report = run_verify(model, options)
    _emit(report, as_json, "verify_json", "render_verify")
    sys.exit(0 if report.passed else 1)


@cli.command(short_help='Run the whole model in NumPy, without TensorFlow.')
@model_argument
@input_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, metavar="OUT.npy",
              help="Where to write the output (.npy; .npz for a model with several outputs); - writes it to stdout "
              "(.npy, or .npz for several outputs; piped or redirected, never to a terminal).")
@click.option("--gates", "gates_path", type=click.Path(path_type=Path), metavar="OUT.npz",
              help="Also save every recurrent layer's per-timestep gates and states: keys {layer path}/{gate}, "
              "{layer path}/h, {layer path}/c.")
@click.option("--trace", "renamed_trace", type=click.Path(path_type=Path), hidden=True, expose_value=False,
              callback=lambda ctx, param, value: _renamed_trace(value))
@click.option("--layer", "layer_path", metavar="PATH", help="Write this recurrent layer's output instead of the model's.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Precision of the replay.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def replay(model: Path, input_path: Path | None, batch: int, timesteps: int, seed: int, output: Path,
           gates_path: Path | None, layer_path: str | None, dtype: str, force: bool, max_mb: int) -> None:
    """Run MODEL's forward pass in NumPy, without TensorFlow, and save the output.

    Uses the definitions of the Keras version that saved the file (Keras 2's hard_sigmoid for
    Keras 2 files), so it also runs legacy models that Keras 3 refuses to load. Models with a
    layer the replay cannot run are refused, naming the layer.

    \b
    Examples:
      grucli replay old_model.h5 --input seq.npy -o out.npy
      grucli replay model.keras --input seq.npy -o out.npy --gates gates.npz
      grucli replay model.keras --input seq.npy -o - > out.npy
      grucli replay model.keras --input seq.npy -o enc.npy --layer encoder/enc_gru
    """
    import numpy as np

    from grucli.engine.graph import ModelReplay, layer_output, trace_arrays
    from grucli.files.inputs import model_inputs
    from grucli.model.layers import find_layers
    from grucli.model.semantics import semantics_for
    from grucli.output.formats import write_npy, write_npz

    if str(output) == "-" and gates_path is not None and str(gates_path) == "-":
        raise CliError("-o - and --gates - both ask for stdout; expected one of them to be a file path")
    destination = _binary_output(output, "output array")
    _binary_output(gates_path, "gate values")
    model_file = _read(model, max_mb)
    if not model_file.has_config:
        raise CliError(f"{model} holds weights only; replay needs its architecture: pass --config MODEL.json (the JSON of model.to_json(), or a .keras config.json)")
    inputs, _ = model_inputs(model_file, input_path, batch, timesteps, seed, _limits(max_mb))
    for path in (output, gates_path):
        if path is not None and str(path) != "-" and path.exists() and not force:
            raise CliError(f"{path} already exists; pass --force to overwrite it")
    from grucli.output.render import DelayedProgress

    with DelayedProgress("replaying", "steps") as progress:
        engine = ModelReplay(model_file, find_layers(model_file), semantics_for(model_file.keras_version, model_file.format),
                             np.float32 if dtype == "float32" else np.float64, trace=gates_path is not None, progress=progress)
        outputs = engine.run(inputs)
    if layer_path is not None:
        outputs = [layer_output(engine.calls, layer_path)]
    if len(outputs) == 1:
        write_npy(output, outputs[0], force=force)
    elif output.suffix == ".npz" or str(output) == "-":
        write_npz(output, {f"output_{index}": value for index, value in enumerate(outputs)}, force=force)
    else:
        raise CliError(f"the model has {len(outputs)} outputs; give -o a .npz path to write them all")
    if gates_path is not None:
        write_npz(gates_path, trace_arrays(engine.calls), force=force)
    shapes = ", ".join(str(o.shape) for o in outputs)
    source = "random input" if input_path is None else str(input_path)
    _say(f"replayed {model} on {source} {', '.join(str(x.shape) for x in inputs)}; wrote {shapes} to {destination}")


@cli.command(short_help='Compare two files gate by gate (e.g. two checkpoints).')
@click.argument("model_a", metavar="A", type=click.Path(path_type=Path))
@click.argument("model_b", metavar="B", type=click.Path(path_type=Path))
@limits_option
@layer_option
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="How many most-changed units to name per array.")
@click.option("--atol", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Changes up to this size count as no change (for --exit-code and the verdict).")
@click.option("--exit-code", "exit_code", is_flag=True,
              help="Exit 1 when any array changed by more than --atol, 0 otherwise (as git diff --exit-code).")
@skip_unsliced_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document with a list `changes` instead of a table.")
def diff(model_a: Path, model_b: Path, layer_paths: Sequence[str], top: int, atol: float, exit_code: bool, skip_unsliced: bool,
         as_json: bool, max_mb: int) -> None:
    """Compare two files of the same architecture gate by gate (e.g. two checkpoints).

    Per layer, gate and array: the largest absolute change, the relative change ‖B−A‖/‖A‖ and
    the units whose columns moved most. Files with different recurrent layers are an error.

    Exit codes: 0 compared (with --exit-code: no array moved by more than --atol); 1 with
    --exit-code, some array moved by more than --atol; 2 unusable files or different architectures.

    \b
    Examples:
      grucli diff epoch_10.h5 epoch_20.h5 --layer encoder
      grucli diff released.h5 rebuilt.h5 --exit-code --atol 1e-6 || echo changed
    """
    from grucli.commands.diff import diff_layers
    from grucli.model.layers import find_layers

    file_a, file_b = _read(model_a, max_mb, weights_only_sides=True), _read(model_b, max_mb, weights_only_sides=True)
    if _config_path() is not None and file_a.config_path is None and file_b.config_path is None:
        raise CliError(f"--config {_config_path()} is given but {model_a} and {model_b} both hold their own configs; "
                                   "expected at least one weights-only file")
    found_a, found_b = find_layers(file_a), find_layers(file_b)
    for found in (found_a, found_b):
        _refuse_unsliced(found, layer_paths, skip_unsliced)
    report = diff_layers(found_a, found_b, layer_paths, top, atol)
    _emit(report, as_json, "diff_json", "render_diff")
    if exit_code and report.changed_beyond_tolerance:
        sys.exit(1)


@cli.command(short_help='Health checks: NaN/Inf, dead units, saturated gates.')
@model_argument
@layer_option
@click.option("--saturation-logit", type=float, default=5.0, show_default=True,
              help="A sigmoid gate is saturated when |bias| − spread-factor·spread exceeds this (σ(5) = 0.993).")
@click.option("--saturation-spread", type=float, default=2.0, show_default=True,
              help="How many standard deviations of the gate's input the bias must clear to count as saturated.")
@click.option("--max-spectral-norm", type=float, default=100.0, show_default=True,
              help="Largest allowed spectral norm of a gate's recurrent block (trained models measured 4.6-50).")
@skip_unsliced_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report instead of a table.")
def check(model: Path, layer_paths: Sequence[str], saturation_logit: float, saturation_spread: float,
          max_spectral_norm: float, skip_unsliced: bool, as_json: bool, max_mb: int) -> None:
    """Health checks for CI: NaN/Inf weights, dead units, saturated gates, exploding recurrent blocks.

    Each finding names the layer, gate and unit. Exit code 1 when anything is found, 0 when
    the model is clean, 2 when the file cannot be read or has no recurrent layer.

    \b
    Example:
      grucli check checkpoint.h5 --max-spectral-norm 50 || echo "bad checkpoint"
    """
    from grucli.commands.check import Thresholds, check_layers
    from grucli.commands.inspect import select_layers
    from grucli.model.layers import find_layers
    from grucli.output.render import DelayedProgress

    found = find_layers(_read(model, max_mb))
    _refuse_unsliced(found, layer_paths, skip_unsliced)
    layers = select_layers(found.recurrent, layer_paths)
    with DelayedProgress("checking", "gates") as progress:
        report = check_layers(str(model), layers, Thresholds(saturation_logit, saturation_spread, max_spectral_norm), progress)
    _emit(report, as_json, "check_json", "render_check")
    sys.exit(0 if report.passed else 1)


@cli.command(short_help='Per-gate heatmaps and histograms to a PNG.')
@model_argument
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, metavar="OUT.png",
              help="The PNG to write; - writes it to stdout (piped or redirected, never to a terminal).")
@layer_option
@click.option("--gate", "gate_names", multiple=True, metavar="G", help="Only this gate (repeatable).")
@click.option("--dpi", type=click.IntRange(min=30, max=600), default=110, show_default=True, help="Resolution of the PNG.")
@click.option("--force", is_flag=True, help="Overwrite OUT.png if it exists.")
def plot(model: Path, output: Path, layer_paths: Sequence[str], gate_names: Sequence[str], dpi: int, force: bool, max_mb: int) -> None:
    """Write per-gate heatmaps and weight histograms of MODEL's recurrent layers to a PNG.

    Needs matplotlib, an optional extra: pip install 'grucli[plot]'.

    \b
    Example:
      grucli plot model.h5 --layer gru_1 -o gru_1.png
    """
    from grucli.commands.inspect import build_inspect_report
    from grucli.model.layers import find_layers
    from grucli.output.plot import write_plot

    destination = _binary_output(output, "PNG")
    report = build_inspect_report(find_layers(_read(model, max_mb)), layer_paths, gate_names, None, with_values=True)
    rows = write_plot(report, output, force=force, dpi=dpi)
    _say(f"wrote {rows} gate row(s) from {len(report.layers)} layer(s) to {destination}")


def _emit(report: Any, as_json: bool, json_formatter: str, text_formatter: str) -> None:
    """Print a report: JSON for scripts, or Rich text for a person (Rich is imported only then)."""
    if as_json:
        from grucli.output import formats

        _print(getattr(formats, json_formatter)(report) + "\n")
    else:
        from grucli.output import render

        _print(getattr(render, text_formatter)(report, color=_use_color(), width=_width()))


def _print(text: str) -> None:
    try:
        click.echo(text, nl=False)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`grucli inspect ... | head`): not an error of this command,
        # whose exit code (verify's verdict) stays its own. What is left has nowhere to go.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _use_color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _width() -> int:
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


def main() -> None:
    """The `grucli` command: runs one command, then ends the process at once."""
    # One command, then exit: start-up creates some 10^5 long-lived objects (modules, classes) that
    # the default thresholds would rescan for cycles about 70 times, some 6 ms of a small command.
    gc.set_threshold(100_000, 50, 100)
    try:
        cli(prog_name="grucli")
    except SystemExit as exit:
        _exit_now(exit.code)


def _exit_now(code: object) -> None:
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

        atexit._run_exitfuncs()  # noqa: SLF001 - the documented handlers, run by hand before os._exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader went away (`| head`), or the stream is closed
            pass
    os._exit(code or 0)


FRAMEWORK_MODULES = frozenset({"tensorflow", "keras", "tf_keras", "torch", "jax"})


if __name__ == "__main__":
    main()
