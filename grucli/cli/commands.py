"""The commands: each parses its options and calls the API (`grucli.api`); nothing else.

May import: click, the API, cli/options, output/ (writers, progress), commands/ records for their options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from grucli.cli.app import CliError, cli, say
from grucli.cli.options import (
    Reading,
    binary_output,
    emit,
    input_options,
    layer_option,
    load_model,
    model_argument,
    output_format,
    reading_options,
    refuse_unsliced_layers,
    renamed_trace,
    skip_unsliced_option,
    units_callback,
)


@cli.command(short_help="Every recurrent layer's weights, labelled by gate and unit.")
@model_argument
@layer_option
@click.option(
    "--gate",
    "gate_names",
    multiple=True,
    metavar="G",
    help="Only this gate (repeatable): z, r, h for GRU; i, f, c, o for LSTM; h for SimpleRNN.",
)
@click.option("--unit", type=int, metavar="N", help="Only unit N: its column in every gate, i.e. the weights that feed unit N.")
@click.option(
    "--values",
    "with_values",
    is_flag=True,
    help="Also print the numbers, rows and columns labelled (large matrices elided; --json has all).",
)
@click.option(
    "--heatmap", is_flag=True, help="Draw each gate's matrices as colour heatmaps (blue negative, red positive; one scale per layer)."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (schema in docs/json.md) instead of tables.")
def inspect(
    model: Path,
    layer_paths: Sequence[str],
    gate_names: Sequence[str],
    unit: int | None,
    with_values: bool,
    heatmap: bool,
    as_json: bool,
    reading: Reading,
) -> None:
    """Show every recurrent layer of MODEL, sliced by gate and unit, with shapes and statistics.

    \b
    Examples:
      grucli inspect model.h5
      grucli inspect model.keras --layer bi/forward --gate z --values
      grucli inspect model.h5 --unit 3 --values      # the weights feeding unit 3
      grucli inspect model.keras --json | jq '.layers[].path'
      grucli inspect model.keras --layer gru --heatmap
    """
    from grucli import api
    from grucli.output.emit import OutputFormat

    report = api.inspect(load_model(model, reading), layer_paths, gate_names, unit, with_values or heatmap)
    emit(report, OutputFormat.JSON if as_json else OutputFormat.HEATMAP if heatmap else OutputFormat.TEXT)


@cli.command(short_help="One unit of one layer, step by step: every number of its arithmetic.")
@model_argument
@input_options
@click.option(
    "--layer",
    "layer_path",
    metavar="PATH",
    help="The recurrent layer (default: the model's first): NAME, NAME/forward or NAME/backward, OUTER/INNER, NAME/cell_K.",
)
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True, help="The sample of the input to follow.")
@click.option("--unit", type=click.IntRange(min=0), default=0, show_default=True, help="The unit to follow.")
@click.option(
    "--keras",
    "framework",
    type=click.Choice(["auto", "keras", "tf-keras", "none"]),
    default="auto",
    show_default=True,
    help="Who computes the reference output at the end: auto is predict when Keras is installed (as in verify), "
    "else grucli's replay; none never imports Keras (fast).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (equations, steps, output) instead of text.")
def explain(
    model: Path,
    input_path: Path | None,
    batch: int,
    timesteps: int,
    seed: int,
    layer_path: str | None,
    sample: int,
    unit: int,
    framework: str,
    as_json: bool,
    reading: Reading,
) -> None:
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
    from grucli import api
    from grucli.commands.explain import ExplainOptions

    options = ExplainOptions(input_path, batch, timesteps, seed, layer_path, sample, unit, framework, reading.limits)
    emit(api.explain(load_model(model, reading), options), output_format(as_json))


@cli.command(short_help="Write every gate slice (or PyTorch state_dicts) to an .npz.")
@model_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    metavar="OUT.npz",
    help="The .npz file to write; - writes it to stdout (piped or redirected, never to a terminal).",
)
@layer_option
@click.option(
    "--layout",
    type=click.Choice(["keras", "torch"]),
    default="keras",
    show_default=True,
    help="keras: every gate slice as {path}/{gate}/{array}. torch: PyTorch nn.GRU/nn.LSTM/nn.RNN "
    "state_dict arrays as {path}/weight_ih_l0 ..., plus {path}/constructor.",
)
@click.option(
    "--approximate", is_flag=True, help="With --layout torch: export reset_after=False GRUs too, which no nn.GRU reproduces exactly."
)
@skip_unsliced_option
@click.option("--force", is_flag=True, help="Overwrite OUT.npz if it exists.")
def export(
    model: Path,
    output: Path,
    layer_paths: Sequence[str],
    layout: str,
    approximate: bool,
    skip_unsliced: bool,
    force: bool,
    reading: Reading,
) -> None:
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
    from grucli import api

    destination = binary_output(output, ".npz file")
    loaded = load_model(model, reading)
    refuse_unsliced_layers(loaded, layer_paths, skip_unsliced)
    layers = api.selected_layers(loaded, layer_paths)
    if layout == "torch":
        import numpy as np

        from grucli.output.formats import write_npz

        modules = api.export_torch(loaded, layer_paths, approximate=approximate)
        arrays = {}
        for module in modules:
            arrays.update(module.arrays)
            arrays[f"{module.path}/constructor"] = np.array(module.constructor)
            say(f"{module.path}: {module.constructor}")
            for note in module.notes:
                say(f"  note: {note}")
        write_npz(output, arrays, force=force)
        count = len(arrays)
    else:
        count = api.export_gates(loaded, output, layer_paths, force=force)
    say(f"wrote {count} arrays from {len(layers)} layer(s) to {destination}")


@cli.command(short_help="Replay each recurrent layer in NumPy and diff against predict.")
@model_argument
@input_options
@click.option(
    "--expected",
    "expected_path",
    type=click.Path(path_type=Path),
    metavar="REF.npy",
    help="Also compare the replay and predict with this stored output (.npy, or .npz for several outputs).",
)
@click.option("--atol", type=float, help="Absolute tolerance. Default 1e-5 on a CPU, 2e-3 on a GPU (TF32 products).")
@click.option("--rtol", type=float, help="Relative tolerance (times |predict|). Default 1e-5 on a CPU, 1e-3 on a GPU.")
@click.option(
    "--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True, help="Precision of the NumPy replay."
)
@layer_option
@click.option(
    "--trace",
    is_flag=True,
    help="Print each timestep's input, gate values and state for one sample and unit (grucli explain also shows each step's arithmetic).",
)
@click.option("--sample", type=int, default=0, show_default=True, help="Sample shown by --trace.")
@click.option("--unit", type=int, default=0, show_default=True, help="Unit shown by --trace.")
@click.option(
    "--keras",
    "framework",
    type=click.Choice(["auto", "keras", "tf-keras"]),
    default="auto",
    show_default=True,
    help="Framework that runs predict: auto picks the file's own generation (tf-keras for Keras 1/2 and "
    "tf.keras 2 files when it is installed, else Keras 3); keras is Keras 3 (backend from KERAS_BACKEND, "
    "default tensorflow); tf-keras keeps the Keras 2 definitions, e.g. of hard_sigmoid.",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(path_type=Path),
    metavar="MODEL.onnx",
    help="Also run this ONNX file of the model (grucli convert's, or another converter's) in ONNX Runtime and compare it with predict.",
)
@click.option("--unsafe", is_flag=True, help="Allow loading models with Lambda layers: runs Python code from the file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schema in docs/json.md) instead of tables.")
def verify(
    model: Path,
    input_path: Path | None,
    batch: int,
    timesteps: int,
    seed: int,
    expected_path: Path | None,
    atol: float | None,
    rtol: float | None,
    dtype: str,
    layer_paths: Sequence[str],
    trace: bool,
    sample: int,
    unit: int,
    framework: str,
    onnx_path: Path | None,
    unsafe: bool,
    as_json: bool,
    reading: Reading,
) -> None:
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
    from grucli import api

    if unsafe:
        click.echo("warning: --unsafe lets the model file run Python code on this machine; use it only for files you trust", err=True)
    report = api.verify(
        load_model(model, reading),
        None,
        input_path=input_path,
        expected_path=expected_path,
        atol=atol,
        rtol=rtol,
        dtype=dtype,
        batch=batch,
        timesteps=timesteps,
        seed=seed,
        trace=trace,
        sample=sample,
        unit=unit,
        layer_paths=tuple(layer_paths),
        framework=framework,
        unsafe=unsafe,
        limits=reading.limits,
        config_path=reading.config_path,
        onnx_path=onnx_path,
    )
    emit(report, output_format(as_json))
    sys.exit(0 if report.passed else 1)


@cli.command(short_help="Write the model as ONNX (checked by ONNX Runtime), or port PyTorch/ONNX weights into Keras (--into).")
@model_argument
@input_options
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    metavar="OUT",
    help="The .onnx file to write (- writes it to stdout, piped or redirected); with --into, the Keras file to write "
    "(TARGET's format: .keras, .h5, .weights.h5).",
)
@click.option(
    "--into",
    "target",
    type=click.Path(path_type=Path),
    metavar="TARGET",
    help="Port MODEL (a PyTorch .pt/.pth state_dict, a .safetensors or an .onnx file) into this Keras architecture "
    "(.keras, .h5; a weights-only file with --config), written to OUT and proved against the source.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="SRC=DST",
    help="With --into: put source module SRC (a state_dict prefix such as encoder.rnn, or an ONNX node name) into "
    "Keras layer DST (a Bidirectional wrapper takes both directions; a multi-layer module fills the layers from DST on). Repeatable.",
)
@click.option("--partial", is_flag=True, help="With --into: port a part; the source modules and target layers left out are listed.")
@click.option("--atol", type=float, help="Absolute tolerance of ONNX Runtime against the replay. Default 1e-5.")
@click.option("--rtol", type=float, help="Relative tolerance (times |replay|). Default 1e-5.")
@click.option(
    "--state-io",
    is_flag=True,
    help="Make each recurrent layer's initial states inputs PATH/h_in (and PATH/c_in) and its final states outputs "
    "PATH/h_out (PATH/c_out): a long sequence fed in chunks, states carried, gives what one pass gives.",
)
@click.option("--force", is_flag=True, help="Overwrite OUT.onnx if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report instead of text.")
def convert(
    model: Path,
    input_path: Path | None,
    batch: int,
    timesteps: int,
    seed: int,
    output: Path,
    atol: float | None,
    rtol: float | None,
    state_io: bool,
    force: bool,
    as_json: bool,
    target: Path | None,
    maps: tuple[str, ...],
    partial: bool,
    reading: Reading,
) -> None:
    """Write MODEL as an ONNX file, without TensorFlow, and prove it with ONNX Runtime; or, with
    --into TARGET, port MODEL's PyTorch or ONNX weights into the Keras model TARGET.

    Recurrent layers become native ONNX GRU, LSTM and RNN nodes (never a Loop): gate orders
    mapped, reset_after as linear_before_reset, each Keras version's hard_sigmoid, go_backwards,
    Bidirectional in every merge mode, stacked cells, initial_state, return_sequences and
    return_state; a masked layer (Masking, Embedding mask_zero) stays one node fed each row's real
    steps with sequence_lens, for any padding. ConvLSTM, which ONNX has no operator for, is a
    Scan. Dense, Embedding, convolutions, pooling, normalisation, reshapes, merges, attention,
    keras.ops and TFOpLambda calls and nested models are written as the ONNX operators that
    compute them; a Lambda or any other layer is refused by name (exit 2). A stateful layer's
    states are inputs and outputs, as with --state-io. With onnxruntime installed (pip install
    'grucli[onnx]') the file is run on the probe input (--input, or seeded random) and compared
    with grucli's replay, which verify compares with Keras's predict.

    Exit codes: 0 written (and, with onnxruntime, within tolerance); 1 ONNX Runtime's output is
    off; 2 a layer convert cannot write, or an unusable file or input.

    With --into, the source's recurrent modules (nn.GRU/LSTM/RNN and their cells, ONNX GRU/LSTM/RNN
    nodes), Linear and Embedding modules are paired with TARGET's layers by kind, in order (--map
    says otherwise), their gates put in Keras's order (PyTorch GRU r, z, n → Keras z, r, h; ONNX
    LSTM i, o, f, c → i, f, c, o), biases laid out as the target keeps them, and written to OUT
    in TARGET's format, without TensorFlow. What would compute otherwise is refused by name (a
    PyTorch GRU into reset_after=False, another activation, LSTM proj_size, other shapes, tensors
    or layers left over without --partial). Then OUT is read back and proved: each paired layer
    against the source's own equations (PyTorch where installed), an ONNX source end to end in
    ONNX Runtime; grucli verify OUT then checks it against Keras's predict.

    Exit codes: 0 written (and proved within --atol/--rtol); 1 the proof is off; 2 a refusal, or an
    unusable file or input.

    \b
    Examples:
      grucli convert model.keras -o model.onnx
      grucli convert old_model.h5 --input seq.npy -o model.onnx --json
      grucli convert tagger.pt --into tagger.keras -o ported.keras
      grucli convert checkpoint.tar --into model.h5 --map encoder.rnn=encoder_gru --partial -o ported.h5
    """
    from grucli import api

    if target is not None:
        _port(model, target, output, maps, partial, input_path, seed, atol, rtol, force, as_json, reading)
        return
    if maps or partial:
        raise CliError("--map and --partial go with --into TARGET (a port into Keras)")
    destination = binary_output(output, "ONNX file")
    loaded = load_model(model, reading)
    report = api.convert(
        loaded,
        output,
        input_path=input_path,
        batch=batch,
        timesteps=timesteps,
        seed=seed,
        atol=atol,
        rtol=rtol,
        force=force,
        limits=reading.limits,
        state_io=state_io,
    )
    if destination == "stdout":
        say(f"wrote {report.nodes} ONNX nodes to stdout")
        if report.comparison is not None and not report.comparison.passed:
            say("ONNX Runtime's output is off from the replay; run with -o FILE to see by how much")
    else:
        emit(report, output_format(as_json))
    if report.comparison is None and report.not_compared:
        say(f"warning: not checked: {report.not_compared}")
    sys.exit(0 if report.passed else 1)


def _port(
    source: Path,
    target: Path,
    output: Path,
    maps: tuple[str, ...],
    partial: bool,
    input_path: Path | None,
    seed: int,
    atol: float | None,
    rtol: float | None,
    force: bool,
    as_json: bool,
    reading: Reading,
) -> None:
    from grucli import api

    if str(output) == "-":
        raise CliError("convert --into writes a Keras file; -o - (stdout) is for ONNX files")
    source_model = load_model(source, Reading(reading.limits, None))
    target_model = load_model(target, reading)
    report = api.port(
        source_model,
        target_model,
        output,
        maps=maps,
        partial=partial,
        input_path=input_path,
        seed=seed,
        atol=atol,
        rtol=rtol,
        force=force,
        limits=reading.limits,
    )
    emit(report, output_format(as_json))
    sys.exit(0 if report.passed else 1)


@cli.command(short_help="Run the whole model in NumPy, without TensorFlow.")
@model_argument
@input_options
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    metavar="OUT.npy",
    help="Where to write the output (.npy; .npz for a model with several outputs); - writes it to stdout "
    "(.npy, or .npz for several outputs; piped or redirected, never to a terminal).",
)
@click.option(
    "--gates",
    "gates_path",
    type=click.Path(path_type=Path),
    metavar="OUT.npz",
    help="Also save every recurrent layer's per-timestep gates and states: keys {layer path}/{gate}, {layer path}/h, {layer path}/c.",
)
@click.option(
    "--trace",
    "renamed_trace",
    type=click.Path(path_type=Path),
    hidden=True,
    expose_value=False,
    callback=lambda ctx, param, value: renamed_trace(value),
)
@click.option("--layer", "layer_path", metavar="PATH", help="Write this recurrent layer's output instead of the model's.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True, help="Precision of the replay.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def replay(
    model: Path,
    input_path: Path | None,
    batch: int,
    timesteps: int,
    seed: int,
    output: Path,
    gates_path: Path | None,
    layer_path: str | None,
    dtype: str,
    force: bool,
    reading: Reading,
) -> None:
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

    from grucli import api
    from grucli.output.formats import write_npy, write_npz
    from grucli.output.progress import DelayedProgress

    if str(output) == "-" and gates_path is not None and str(gates_path) == "-":
        raise CliError("-o - and --gates - both ask for stdout; expected one of them to be a file path")
    destination = binary_output(output, "output array")
    binary_output(gates_path, "gate values")
    loaded = load_model(model, reading)
    if not loaded.file.has_config:
        raise CliError(
            f"{model} holds weights only; replay needs its architecture: pass --config MODEL.json "
            "(the JSON of model.to_json(), or a .keras config.json)"
        )
    inputs, _ = api.model_inputs(loaded, input_path, batch, timesteps, seed, reading.limits)
    for path in (output, gates_path):
        if path is not None and str(path) != "-" and path.exists() and not force:
            raise CliError(f"{path} already exists; pass --force to overwrite it")
    with DelayedProgress("replaying", "steps") as progress:
        result = api.replay(
            loaded, inputs, np.float32 if dtype == "float32" else np.float64, gates=gates_path is not None, progress=progress
        )
    outputs = [result.layer_output(layer_path)] if layer_path is not None else list(result.outputs)
    if len(outputs) == 1:
        write_npy(output, outputs[0], force=force)
    elif output.suffix == ".npz" or str(output) == "-":
        write_npz(output, {f"output_{index}": value for index, value in enumerate(outputs)}, force=force)
    else:
        raise CliError(f"the model has {len(outputs)} outputs; give -o a .npz path to write them all")
    if gates_path is not None:
        write_npz(gates_path, result.gate_arrays(), force=force)
    shapes = ", ".join(str(o.shape) for o in outputs)
    source = "random input" if input_path is None else str(input_path)
    say(f"replayed {model} on {source} {', '.join(str(x.shape) for x in inputs)}; wrote {shapes} to {destination}")


@cli.command(short_help="Compare two files gate by gate (e.g. two checkpoints).")
@click.argument("model_a", metavar="A", type=click.Path(path_type=Path))
@click.argument("model_b", metavar="B", type=click.Path(path_type=Path))
@reading_options
@layer_option
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="How many most-changed units to name per array.")
@click.option(
    "--atol",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Changes up to this size count as no change (for --exit-code and the verdict).",
)
@click.option(
    "--exit-code",
    "exit_code",
    is_flag=True,
    help="Exit 1 when any array changed by more than --atol, 0 otherwise (as git diff --exit-code).",
)
@skip_unsliced_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document with a list `changes` instead of a table.")
def diff(
    model_a: Path,
    model_b: Path,
    layer_paths: Sequence[str],
    top: int,
    atol: float,
    exit_code: bool,
    skip_unsliced: bool,
    as_json: bool,
    reading: Reading,
) -> None:
    """Compare two files of the same architecture gate by gate (e.g. two checkpoints), or a
    PyTorch/ONNX source with a Keras port of it.

    Per layer, gate and array: the largest absolute change, the relative change ‖B−A‖/‖A‖ and
    the units whose columns moved most. Files with different recurrent layers are an error.
    Files of different frameworks (PyTorch .pt/.safetensors, ONNX, Keras) are compared in Keras's
    layout, layers paired in file order; where B holds A's numbers in the wrong places the mistake
    is named with its fix: gates_permuted, transposed, kernels_exchanged, bias_rows_swapped,
    bias_summed, reset_after_mismatch, directions_swapped.

    Exit codes: 0 compared (with --exit-code: no array moved by more than --atol); 1 with
    --exit-code, some array moved by more than --atol; 2 unusable files or different architectures.

    \b
    Examples:
      grucli diff epoch_10.h5 epoch_20.h5 --layer encoder
      grucli diff released.h5 rebuilt.h5 --exit-code --atol 1e-6 || echo changed
      grucli diff model.pt hand_port.keras --exit-code
    """
    from grucli import api

    a, b = load_model(model_a, reading, weights_only_sides=True), load_model(model_b, reading, weights_only_sides=True)
    if reading.config_path is not None and a.file.config_path is None and b.file.config_path is None:
        raise CliError(
            f"--config {reading.config_path} is given but {model_a} and {model_b} both hold their own configs; "
            "expected at least one weights-only file"
        )
    for loaded in (a, b):
        refuse_unsliced_layers(loaded, layer_paths, skip_unsliced)
    report = api.diff(a, b, layer_paths, top, atol)
    emit(report, output_format(as_json))
    if exit_code and report.differs:
        sys.exit(1)


@cli.command(short_help="Health checks: NaN/Inf, dead units, saturated gates.")
@model_argument
@layer_option
@click.option(
    "--saturation-logit",
    type=float,
    default=5.0,
    show_default=True,
    help="A sigmoid gate is saturated when |bias| − spread-factor·spread exceeds this (σ(5) = 0.993).",
)
@click.option(
    "--saturation-spread",
    type=float,
    default=2.0,
    show_default=True,
    help="How many standard deviations of the gate's input the bias must clear to count as saturated.",
)
@click.option(
    "--max-spectral-norm",
    type=float,
    default=100.0,
    show_default=True,
    help="Largest allowed spectral norm of a gate's recurrent block (trained models measured 4.6-50).",
)
@skip_unsliced_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report instead of a table.")
def check(
    model: Path,
    layer_paths: Sequence[str],
    saturation_logit: float,
    saturation_spread: float,
    max_spectral_norm: float,
    skip_unsliced: bool,
    as_json: bool,
    reading: Reading,
) -> None:
    """Health checks for CI: NaN/Inf weights, dead units, saturated gates, exploding recurrent blocks.

    Each finding names the layer, gate and unit. Exit code 1 when anything is found, 0 when
    the model is clean, 2 when the file cannot be read or has no recurrent layer.

    \b
    Example:
      grucli check checkpoint.h5 --max-spectral-norm 50 || echo "bad checkpoint"
    """
    from grucli import api
    from grucli.commands.check import Thresholds
    from grucli.output.progress import DelayedProgress

    loaded = load_model(model, reading)
    refuse_unsliced_layers(loaded, layer_paths, skip_unsliced)
    with DelayedProgress("checking", "gates") as progress:
        report = api.check(loaded, Thresholds(saturation_logit, saturation_spread, max_spectral_norm), layer_paths, progress)
    emit(report, output_format(as_json))
    sys.exit(0 if report.passed else 1)


@cli.command(short_help="Weight heatmaps per gate, or gates and states over time (--activations), to a PNG.")
@model_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    metavar="OUT.png",
    help="The PNG to write; - writes it to stdout (piped or redirected, never to a terminal).",
)
@layer_option
@click.option("--gate", "gate_names", multiple=True, metavar="G", help="Only this gate (repeatable; weights only).")
@click.option(
    "--activations",
    is_flag=True,
    help="Draw each layer's gates and states over time on an input (--input, or seeded random) instead of its weights.",
)
@click.option(
    "--trajectories",
    "store",
    type=click.Path(path_type=Path),
    metavar="ACTS",
    help="Draw a layer's states across the dataset stored in ACTS (grucli activations): PCA trajectories of "
    "--sequences rows, and each unit's mean, saturation and correlation with --labels.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(path_type=Path),
    metavar="Y.npy",
    help="Labels of the stored rows, (N,) or (N, T) (--trajectories).",
)
@click.option(
    "--state", default="h", show_default=True, metavar="NAME", help="The stored value whose trajectories are drawn (--trajectories)."
)
@click.option(
    "--sequences", type=click.IntRange(min=1), default=20, show_default=True, help="Rows whose trajectories are drawn (--trajectories)."
)
@input_options
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True, help="The sample of the input to draw (--activations).")
@click.option(
    "--units",
    "units_text",
    metavar="LIST",
    callback=units_callback,
    help="The units to draw, e.g. 0-15,32 (--activations). Default: all, averaged over blocks beyond 128.",
)
@click.option("--dpi", type=click.IntRange(min=30, max=600), default=110, show_default=True, help="Resolution of the PNG.")
@click.option("--force", is_flag=True, help="Overwrite OUT.png if it exists.")
def plot(
    model: Path,
    output: Path,
    layer_paths: Sequence[str],
    gate_names: Sequence[str],
    activations: bool,
    store: Path | None,
    labels_path: Path | None,
    state: str,
    sequences: int,
    input_path: Path | None,
    batch: int,
    timesteps: int,
    seed: int,
    sample: int,
    units_text: list[int] | None,
    dpi: int,
    force: bool,
    reading: Reading,
) -> None:
    """Write heatmaps of MODEL's recurrent layers to a PNG.

    Without --activations: per gate, the kernel and recurrent kernel as heatmaps and a histogram of
    the gate's weights. With --activations: per layer, its input and every gate and state after
    its activation (GRU z, r, hh, h; LSTM i, f, cc, c, o, h) as units × timesteps, in the order
    the layer consumes its steps (marked for a backward direction), masked steps grey, each with
    its own colour scale; from one replay, the numbers replay --gates writes. Layers of more than
    128 units or inputs of more than 400 steps are averaged over blocks, which the title says.

    With --trajectories ACTS (a store of `grucli activations` computed from MODEL): one layer's
    states across the whole dataset (--layer, default the first stored): the first two principal
    components of its state fitted on every real step, with --sequences rows drawn as paths
    through them (coloured by --labels where one label a sequence is given), and per unit its mean,
    the share of steps its gates saturate and its correlation with the labels.

    Needs matplotlib, an optional extra: pip install 'grucli[plot]'.

    \b
    Examples:
      grucli plot model.h5 --layer gru_1 -o gru_1.png
      grucli plot model.keras --activations --input x.npy -o gates.png
      grucli plot model.keras --trajectories acts.zarr --labels y.npy -o s.png
    """
    from grucli import api

    destination = binary_output(output, "PNG")
    if store is not None:
        if activations or gate_names or input_path is not None or units_text is not None:
            raise CliError("--trajectories draws a stored dataset; expected it without --activations, --gate, --input and --units")
        if len(layer_paths) > 1:
            raise CliError("--trajectories draws one layer; expected at most one --layer")
        _plot_trajectories(
            model, reading, store, labels_path, layer_paths[0] if layer_paths else None, state, sequences, seed, output, force, dpi
        )
        return
    if labels_path is not None:
        raise CliError("--labels colours --trajectories; expected --trajectories ACTS with it")
    if not activations and (units_text is not None or sample != 0 or input_path is not None):
        raise CliError("--input, --sample and --units choose what --activations draws; expected --activations with them")
    if activations and gate_names:
        raise CliError("--gate chooses weight heatmaps; --activations draws every gate and state of a layer (choose layers with --layer)")
    loaded = load_model(model, reading)
    if not activations:
        from grucli.output.plot import write_plot

        report = api.inspect(loaded, layer_paths, gate_names, None, with_values=True)
        rows = write_plot(report, output, force=force, dpi=dpi)
        say(f"wrote {rows} gate row(s) from {len(report.layers)} layer(s) to {destination}")
        return
    from grucli.output.plot import write_activity_plot

    if not loaded.file.has_config:
        raise CliError(
            f"{model} holds weights only; its activations need its architecture: pass --config MODEL.json "
            "(the JSON of model.to_json(), or a .keras config.json)"
        )
    inputs, description = api.model_inputs(loaded, input_path, batch, timesteps, seed, reading.limits)
    found = api.activities(loaded, inputs, layer_paths, sample, units_text, description)
    maps = write_activity_plot(found, output, force=force, dpi=dpi)
    say(f"wrote {maps} heatmap(s) of {len(found.layers)} layer(s), sample {sample} of {description}, to {destination}")
    for path, why in found.skipped:
        say(f"  {path} not drawn: {why}")


def _plot_trajectories(
    model: Path,
    reading: Reading,
    store: Path,
    labels: Path | None,
    layer: str | None,
    state: str,
    sequences: int,
    seed: int,
    output: Path,
    force: bool,
    dpi: int,
) -> None:
    from grucli import api
    from grucli.output.dynamics import write_trajectories

    loaded = load_model(model, reading)
    found = api.population(store, layer, state, sequences, seed, labels, loaded, reading.limits)
    write_trajectories(found, output, force=force, dpi=dpi)
    drawn = found.trajectories
    say(
        f"wrote {binary_output(output, 'PNG')}: {drawn.state} of {found.layer}, {len(drawn.sequences)} sequences in the first "
        f"{len(drawn.explained_variance_ratio)} principal components ({', '.join(f'{v:.0%}' for v in drawn.explained_variance_ratio)} "
        f"of the variance), and {len(found.units)} per-unit views"
    )


@cli.command(short_help="One self-contained HTML page: weights, equations, activations, verify and check.")
@model_argument
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, metavar="OUT.html", help="The HTML file to write.")
@input_options
@click.option("--random", "use_random", is_flag=True, help="Without --input, draw the activations on a seeded random input.")
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True, help="The sample whose activations are drawn.")
@click.option(
    "--verify/--no-verify",
    "with_verify",
    default=None,
    help="Compare the replay with Keras's predict on the input. Default: where Keras is installed.",
)
@click.option(
    "--activations",
    "store",
    type=click.Path(path_type=Path),
    metavar="ACTS",
    help="Add the dataset stored in ACTS (grucli activations, from MODEL): state trajectories, per-unit views and, with "
    "--labels, the probe's scores against a control task.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(path_type=Path),
    metavar="Y.npy",
    help="Labels of the stored rows, (N,) or (N, T), to probe (--activations).",
)
@click.option("--force", is_flag=True, help="Overwrite OUT.html if it exists.")
def report(
    model: Path,
    output: Path,
    input_path: Path | None,
    batch: int,
    timesteps: int,
    seed: int,
    use_random: bool,
    sample: int,
    with_verify: bool | None,
    store: Path | None,
    labels_path: Path | None,
    force: bool,
    reading: Reading,
) -> None:
    """Write one HTML page about MODEL that opens from disk in any browser (nothing is loaded
    from the network: its script, style and numbers are inline).

    The page holds the file's format and Keras version; per recurrent layer its settings, its
    exact step equations and its weights per gate as heatmaps (pointing at a cell shows gate,
    unit, input row and value); with an input (--input, or --random), each layer's gates and
    states over time with the same pointing, and verify's result against Keras's predict where
    Keras is installed; and check's findings. Big layers are averaged over blocks (each picture
    says so). A model grucli cannot replay still gets its weights, with the reason. With
    --activations ACTS, a section on the whole dataset: trajectories of the states, per-unit
    views and, with --labels, diagnostic classifiers against a control task (as grucli probe).

    \b
    Examples:
      grucli report model.keras -o model.html
      grucli report model.h5 --input seq.npy -o model.html
      grucli report model.keras --random --no-verify -o model.html
      grucli report model.keras --activations acts.zarr --labels y.npy -o model.html
    """
    from grucli import api
    from grucli.output.html_report import write_report

    if str(output) == "-":
        raise CliError("-o - is not taken for an HTML page; expected a file path")
    if output.exists() and not force:
        raise CliError(f"{output} already exists; pass --force to overwrite it")
    loaded = load_model(model, reading)
    inputs, description = None, None
    if input_path is not None or use_random:
        if not loaded.file.has_config:
            raise CliError(f"{model} holds weights only; its activations need its architecture: pass --config MODEL.json")
        inputs, description = api.model_inputs(loaded, input_path, batch, timesteps, seed, reading.limits)
    if labels_path is not None and store is None:
        raise CliError("--labels are probed on a stored dataset; expected --activations ACTS with them")
    found = api.report(loaded, inputs, description or "given", sample, with_verify, None, store, labels_path, reading.limits)
    size = write_report(found, output, force=force)
    say(
        f"wrote {output} ({size / 1e6:.2f} MB): {len(found.layers)} recurrent layer(s)"
        + ("" if found.activities_missing is None else f"; activations: {found.activities_missing}")
        + (
            f"; verify {'passed' if found.verify.passed else 'FAILED'}"
            if found.verify is not None
            else f"; verify: {found.verify_missing}"
            if inputs is not None and with_verify is not False
            else ""
        )
    )
