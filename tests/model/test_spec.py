"""`grucli.model.spec`: a model's graph parsed once, every config dialect normalised (hand-checked cases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grucli.files.inputs import input_specs
from grucli.model.records import RawLayer
from grucli.files.reader import read_model
from grucli.model.spec import Call, Ref, graph_spec, parse_call


def test_keras2_nodes_tensors_lists_constants_and_keyword_tensors() -> None:
    # A merge: one argument, the list of its tensors.
    assert parse_call([["a", 0, 0, {}], ["b", 1, 2, {}]]) == Call(([Ref("a", 0, 0), Ref("b", 1, 2)],), {}, keras2=True)
    # tf.keras 2 TFOpLambda: the one-tensor call saved as the item itself, a tensor keyword.
    assert parse_call(["g", 0, 0, {"y": ["m", 0, 0], "name": None}]) == Call((Ref("g", 0, 0),), {"y": Ref("m", 0, 0), "name": None}, True)
    # `1.0 - g`: the constant first operand.
    assert parse_call([["_CONSTANT_VALUE", -1, 1.0, {"y": ["g", 0, 0]}]]) == Call((1.0,), {"y": Ref("g", 0, 0)}, True)
    # Lists that are not tensors stay lists (`perm=[0, 2, 1]`).
    assert parse_call([["g", 0, 0, {"perm": [0, 2, 1]}]]).kwargs == {"perm": [0, 2, 1]}


def test_keras3_nodes_tensors_slices_and_ellipsis() -> None:
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, 6, 4], "dtype": "float32", "keras_history": ["gru", 0, 0]}}
    node = {"args": [tensor, [{"class_name": "__ellipsis__", "config": {}}, {"class_name": "__slice__", "config": {"start": 1, "stop": None, "step": 2}}]],
            "kwargs": {"mask": None}}
    call = parse_call(node)
    assert call == Call((Ref("gru", 0, 0), [Ellipsis, slice(1, None, 2)]), {"mask": None})
    assert call.refs() == [Ref("gru", 0, 0)]


def test_an_inputs_consumer_is_found_by_reference_not_by_substring(tf_keras: Any, tmp_path: Path) -> None:
    # "ids" is a prefix of "ids_extra", whose Dense is listed first: the Embedding still gets "ids".
    layers = tf_keras.layers
    extra, ids = tf_keras.Input((5, 3), name="ids_extra"), tf_keras.Input((5,), name="ids", dtype="int32")
    merged = layers.Concatenate()([layers.Dense(4, name="dense")(extra), layers.Embedding(7, 4, name="embedding")(ids)])
    tf_keras.Model([extra, ids], layers.GRU(2)(merged)).save(tmp_path / "m.h5")
    with read_model(tmp_path / "m.h5") as model:
        spec = graph_spec(model.root, str(tmp_path / "m.h5"))
        assert [layer.name for layer in spec.consumers("ids")] == ["embedding"]
        assert [(s.name, s.vocabulary) for s in input_specs(model)] == [("ids_extra", None), ("ids", 7)]


def test_sequential_and_nested_numbering() -> None:
    inner = RawLayer("inner", "Sequential", {"layers": []}, children=(("layers", RawLayer("input", "InputLayer", {})),))
    root = RawLayer("model", "Functional", {
        "layers": [{"name": "x", "class_name": "InputLayer", "config": {}, "inbound_nodes": []},
                   {"name": "inner", "class_name": "Sequential", "config": {}, "inbound_nodes": [[["x", 0, 0, {}]]]}],
        "input_layers": [["x", 0, 0]], "output_layers": [["inner", 1, 0]],
    }, children=(("layers", RawLayer("x", "InputLayer", {})), ("layers", inner)))
    spec = graph_spec(root, "m.h5")
    # tf-keras numbers a nested Sequential's calls from 1 (its own input node is node 0).
    assert [node.output_ref(0) for node in spec.nodes] == [Ref("inner", 1, 0)] and spec.outputs == (Ref("inner", 1, 0),)
    assert graph_spec(inner, "m.h5").sequential
