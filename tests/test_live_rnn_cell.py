"""``keras.layers.RNN(cell)`` around the built-in cells, live against Keras 3 and tf_keras.

One model per library holds every case as a branch (one build, one save per format, one Keras
run per input set): ``RNN(LSTMCell | GRUCell | SimpleRNNCell)`` with return_sequences /
return_state / go_backwards, ``Bidirectional(RNN(cell))``, ``StackedRNNCells`` of mixed cells
(return_sequences, return_state, go_backwards, a Bidirectional stack), an ``initial_state``
decoder, and fused twins holding the same weights for the gate checks. Masked branches read an
``Embedding(mask_zero=True)``; two token batches cover contiguous padding and holes. Every
layer's output is compared with Keras at ``ATOL["cpu_float32"]`` after loading ``.keras`` and
``.h5``. The converter's refusals are checked without Keras.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from converters.bidirectional import _split_weights
from converters.common import Context
from converters.rnn_cell import convert_rnn
from converters.spec import CallSpec, KerasVersion, LayerSpec, TensorRef
from tests.helpers import (
    ATOL,
    KerasReference,
    assert_close,
    assert_model_parity,
    import_keras,
    keras_outputs,
    keras_reference,
    randomize_biases,
    save,
    seed,
)
from torch_lstm_probe.errors import UnsupportedLayerError, UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers import LSTM, StackedRecurrent
from torch_lstm_probe.layers.lstm import LSTMConfig
from torch_lstm_probe.layers.stacked import StackedRecurrentConfig

BATCH, STEPS, FEATURES = 5, 7, 4
VOCAB, EMBED = 12, 4
FORMATS = ("keras", "h5")
LSTM_GATES = ("i", "f", "g", "o", "c", "h")
GRU_GATES = ("z", "r", "n", "h")


# ---------------------------------------------------------------------------- the live model


def _flatten(klib, value: Any) -> list[Any]:
    """A layer's outputs as one flat list (a stack's LSTM states come nested as ``[h, c]``)."""
    if klib.__name__ == "keras":
        return list(klib.tree.flatten(value))
    nest = importlib.import_module("tensorflow").nest
    return list(nest.flatten(value))


def _inputs() -> list[list[np.ndarray]]:
    """Two input sets ``[tokens, features]``: tokens padded contiguously, then with holes (0 is masked)."""
    rng = np.random.default_rng(2)
    padded = rng.integers(1, VOCAB, size=(BATCH, STEPS)).astype(np.int32)
    padded[0, 4:] = 0  # right padding
    padded[1, :3] = 0  # left padding
    padded[2, :1] = 0  # both sides
    padded[2, 5:] = 0
    padded[3, :] = 0  # fully masked row
    holes = rng.integers(1, VOCAB, size=(BATCH, STEPS)).astype(np.int32)
    holes[0, [1, 4]] = 0
    holes[1, :2] = 0
    holes[1, 5] = 0
    holes[4, 2:4] = 0
    features = rng.standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)
    return [[padded, features], [holes, features]]


def _build(klib):
    """The model of every case; returns it and its twin pairs ``(RNN layer, fused layers)``."""
    L = klib.layers
    keras3 = klib.__name__ == "keras"
    tokens = klib.Input(shape=(STEPS,), dtype="int32", name="tokens")
    features = klib.Input(shape=(STEPS, FEATURES), name="features")
    x = L.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(tokens)
    outs: list[Any] = []

    def add(layer, inp, **kwargs):
        out = _flatten(klib, layer(inp, **kwargs))
        outs.extend(out)
        return out

    add(L.RNN(L.LSTMCell(3), return_sequences=True, name="lstm_seq"), x)
    _, h, c = add(L.RNN(L.LSTMCell(3), return_state=True, go_backwards=True, name="lstm_state_back"), x)
    add(L.RNN(L.GRUCell(3), return_sequences=True, go_backwards=True, name="gru_seq_back"), x)
    add(L.RNN(L.GRUCell(3, reset_after=False), return_state=True, name="gru_before_state"), x)
    add(L.RNN(L.SimpleRNNCell(3), return_sequences=True, return_state=True, name="rnn_seq_state"), x)
    add(L.Bidirectional(L.RNN(L.LSTMCell(2), return_sequences=True), name="bi_lstm"), x)
    add(L.Bidirectional(L.RNN(L.GRUCell(2, reset_after=False), return_state=True), merge_mode="sum", name="bi_gru"), x)
    stack_cells = [L.LSTMCell(3), L.GRUCell(2)]
    _, h0, c0, h1 = add(
        L.RNN(L.StackedRNNCells(stack_cells), return_sequences=True, return_state=True, name="stack"), x
    )
    add(
        L.RNN(
            L.StackedRNNCells([L.LSTMCell(3), L.GRUCell(2, reset_after=False)]), go_backwards=True, name="stack_back"
        ),
        x,
    )
    cells = [L.GRUCell(2), L.SimpleRNNCell(3), L.LSTMCell(2)]
    add(L.RNN(L.StackedRNNCells(cells), return_sequences=True, go_backwards=True, return_state=True, name="stack_3"), x)
    add(
        L.Bidirectional(
            L.RNN(L.StackedRNNCells([L.SimpleRNNCell(2), L.GRUCell(2)]), return_sequences=True), name="bi_stack"
        ),
        x,
    )
    # Unmasked: the fused path without a mask.
    add(L.RNN(L.LSTMCell(3), return_sequences=True, go_backwards=True, name="f_lstm_back"), features)
    add(L.RNN(L.StackedRNNCells([L.SimpleRNNCell(2), L.LSTMCell(3)]), return_state=True, name="f_stack"), features)
    add(L.RNN(L.LSTMCell(3), return_sequences=True, name="dec_lstm"), features, initial_state=[h, c])
    if keras3:
        # A stack's initial_state is nested per cell. tf_keras records such a call in its inbound
        # nodes as a nested list, which the file readers do not parse, so only Keras 3 has this case.
        add(
            L.RNN(L.StackedRNNCells([L.LSTMCell(3), L.GRUCell(2)]), return_sequences=True, name="dec_stack"),
            features,
            initial_state=[[h0, c0], h1],
        )
    twin_lstm = L.LSTM(3, return_sequences=True, name="twin_lstm")
    twin_a = L.LSTM(3, return_sequences=True, name="twin_a")
    twin_b = L.GRU(2, return_sequences=True, name="twin_b")
    outs.append(twin_lstm(x))
    outs.append(twin_b(twin_a(x)))
    model = klib.Model([tokens, features], outs, name=f"rnn_cells_{klib.__name__}")
    return model, [("lstm_seq", [twin_lstm]), ("stack", [twin_a, twin_b])]


def _reference(klib, model, inputs: list[np.ndarray]) -> KerasReference:
    """Every layer's outputs by probe key (``name`` / ``name:k`` over the flattened outputs) and the model's."""
    keys, tensors = [], []
    for layer in model.layers:
        if layer.__class__.__name__ == "InputLayer":
            continue
        flat = _flatten(klib, layer.output)
        if len(flat) == 1:
            keys.append(layer.name)
        else:
            keys += [f"{layer.name}:{k}" for k in range(len(flat))]
        tensors += flat
    values = klib.Model(model.inputs, tensors)(inputs, training=False)
    return KerasReference({k: np.asarray(v) for k, v in zip(keys, values)}, keras_outputs(model, inputs))


@pytest.fixture(scope="module", params=["keras", "tf_keras"])
def built(request, tmp_path_factory) -> SimpleNamespace:
    """One library's model, its Keras references per input set, and its loads from ``.keras`` and ``.h5``."""
    klib = import_keras(request.param)
    seed(klib)
    model, twins = _build(klib)
    randomize_biases(model, np.random.default_rng(0))
    for name, fused in twins:  # the fused twins get the RNN layer's weights, cell by cell
        weights = model.get_layer(name).get_weights()
        for layer in fused:
            count = len(layer.get_weights())
            layer.set_weights(weights[:count])
            weights = weights[count:]
    input_sets = _inputs()
    references = [_reference(klib, model, inputs) for inputs in input_sets]
    folder = tmp_path_factory.mktemp(request.param)
    loaded = {fmt: tlp.load_keras(save(model, folder, fmt)) for fmt in FORMATS}
    return SimpleNamespace(klib=klib, model=model, inputs=input_sets, references=references, loaded=loaded)


# ---------------------------------------------------------------------------- live tests


@pytest.mark.keras
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_layer_matches_keras(built, fmt):
    """Every layer's output (stack states flattened) equals Keras' on padded and holed tokens."""
    for inputs, reference in zip(built.inputs, built.references):
        assert_model_parity(built.klib, built.model, built.loaded[fmt], inputs, ATOL["cpu_float32"], reference)


@pytest.mark.keras
def test_gates_equal_fused_layers_with_the_same_weights(built, tmp_path):
    """``RNN(LSTMCell)`` gates equal a fused LSTM's; a stack's ``cell_<k>`` gates equal fused layers run in turn."""
    model = built.loaded["keras"]
    tokens, features = built.inputs[1]
    acts = tlp.probe(model, [tokens, features], gates=True)
    for g in LSTM_GATES:
        assert_close(acts[f"lstm_seq/gates/{g}"], acts[f"twin_lstm/gates/{g}"], atol=0.0, what=f"gate {g}")
        assert_close(acts[f"stack/cell_0/gates/{g}"], acts[f"twin_a/gates/{g}"], atol=0.0, what=f"cell_0 gate {g}")
    for g in GRU_GATES:
        assert_close(acts[f"stack/cell_1/gates/{g}"], acts[f"twin_b/gates/{g}"], atol=0.0, what=f"cell_1 gate {g}")
    assert acts["stack/mask"].tolist() == (tokens != 0).tolist()
    assert acts["bi_lstm/forward/gates/f"].shape == (BATCH, STEPS, 2)
    assert acts["bi_stack/backward/cell_1/gates/z"].shape == (BATCH, STEPS, 2)
    assert isinstance(model.layer("lstm_seq"), LSTM)
    stack = model.layer("stack_3")
    assert isinstance(stack, StackedRecurrent)
    assert [layer.config.go_backwards for layer in stack.layers] == [True, False, False]
    path = tmp_path / "cells.safetensors"
    tlp.save(model, path)
    reloaded = tlp.load(path)
    for a, b in zip(model(tokens, features), reloaded(tokens, features)):
        assert_close(a, b, atol=0.0, what="safetensors round trip")


# ---------------------------------------------------------------------------- refusals (no Keras)

CTX = Context("m.keras", KerasVersion(3, 15))


def _cell(class_name: str, units: int = 2, **config: Any) -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": class_name, "config": {"name": "c", "units": units, **config}}


def _rnn(cell: dict[str, Any], weights: tuple[np.ndarray, ...] = (), **options: Any) -> LayerSpec:
    config = {"name": "r", "cell": cell, "return_sequences": False, **options}
    return LayerSpec(name="r", class_name="RNN", config=config, weights=weights)


def _arrays(features: int, units: int, blocks: int) -> tuple[np.ndarray, ...]:
    width = blocks * units
    return (np.zeros((features, width), np.float32), np.zeros((units, width), np.float32), np.zeros(width, np.float32))


def test_custom_cell_is_refused_with_the_fix():
    custom = {"module": "my_cells", "class_name": "MinimalCell", "config": {"units": 2}}
    with pytest.raises(
        UnsupportedLayerError,
        match=r"layer 'r' \(RNN\) wraps a cell of class 'MinimalCell'.*custom_layers=\{'MinimalCell'",
    ):
        convert_rnn(_rnn(custom), CTX)
    stack = {"class_name": "StackedRNNCells", "config": {"name": "s", "cells": [_cell("LSTMCell"), custom]}}
    with pytest.raises(UnsupportedLayerError, match=r"'MinimalCell' \(cell 1 of its StackedRNNCells\).*custom_layers"):
        convert_rnn(_rnn(stack), CTX)


def test_stack_states_of_old_writers_are_refused():
    """Keras 2.0-2.3 ordered a stack's states last cell first: reading them is refused, running is not."""
    stack = {
        "class_name": "StackedRNNCells",
        "config": {"name": "s", "cells": [_cell("LSTMCell"), _cell("GRUCell", reset_after=False)]},
    }
    weights = _arrays(3, 2, 4) + _arrays(2, 2, 3)
    old = Context("m.h5", KerasVersion(2, 2, 4))
    with pytest.raises(UnsupportedOptionError, match=r"layer 'r' \(RNN\).*return_state.*Keras 2.2.4"):
        convert_rnn(_rnn(stack, weights, return_state=True), old)
    call = CallSpec((TensorRef("x", 0, 0),), {"initial_state": [TensorRef("s", 0, 1)]})
    with pytest.raises(UnsupportedOptionError, match="initial_state"):
        convert_rnn(LayerSpec("r", "RNN", _rnn(stack).config, weights, calls=(call,)), old)
    assert convert_rnn(_rnn(stack, weights), old).type == "StackedRecurrent"


def test_stack_weights_that_fit_no_cell_order_are_refused():
    stack = {
        "class_name": "StackedRNNCells",
        "config": {"name": "s", "cells": [_cell("LSTMCell"), _cell("SimpleRNNCell", 3)]},
    }
    with pytest.raises(
        WeightMismatchError, match=r"layer 'r' \(RNN\).*do not fit its cells \['LSTMCell', 'SimpleRNNCell'\]"
    ):
        convert_rnn(_rnn(stack, _arrays(3, 2, 4) + _arrays(2, 4, 1)), CTX)


def test_stack_weights_that_fit_two_cell_orders_are_refused():
    """Eleven like cells: a .keras file lists lstm_cell_10 before lstm_cell_2, and shapes cannot tell."""
    stack = {"class_name": "StackedRNNCells", "config": {"name": "s", "cells": [_cell("LSTMCell")] * 11}}
    with pytest.raises(WeightMismatchError, match=r"fit two orders of its cells.*save the model as \.h5"):
        convert_rnn(_rnn(stack, _arrays(2, 2, 4) * 11), CTX)


def test_stateful_stack_picks_carried_states_of_all_cells_together():
    """tf_keras' rule: the carried states win while any cell's carried state is non-zero."""
    cells = tuple(
        {
            "type": "LSTM",
            "config": asdict(
                LSTMConfig(input_size=i, hidden_size=2, stateful=True, batch_size=1, return_sequences=True)
            ),
        }
        for i in (3, 2)
    )
    stack = StackedRecurrent(StackedRecurrentConfig(cells, stateful=True, initial_state_rule="carried_unless_zero"))
    x = torch.randn(1, 4, 3)  # (N, L, F)
    given = [torch.full((1, 2), 0.5) for _ in range(4)]  # h_0, c_0, h_1, c_1
    fresh = stack(x, initial_state=given)
    stack.reset_states()
    assert torch.equal(stack(x, initial_state=given), fresh), "zero carried states: the given ones are used"
    stack.reset_states()
    stack.cell_1.state_h.fill_(1.0)  # only the second cell carries something
    carried = stack(x, initial_state=given)
    assert not torch.equal(carried, fresh)
    stack.reset_states()
    stack.cell_1.state_h.fill_(1.0)
    assert torch.equal(stack(x), carried), "a non-zero cell: every cell starts from its carried state"


@pytest.mark.keras
def test_stateful_and_time_major_stacks(klib, tmp_path):
    """A stateful stack carries every cell's state across calls; tf_keras' time_major stack reads (time, batch, ·)."""
    L = klib.layers
    seed(klib)
    inp = klib.Input(batch_shape=(BATCH, STEPS, FEATURES), name="x")
    cells = [L.LSTMCell(3), L.GRUCell(2)]
    outs = [L.RNN(L.StackedRNNCells(cells), stateful=True, return_sequences=True, go_backwards=True, name="carry")(inp)]
    if klib.__name__ == "tf_keras":  # Keras 3 has no time_major
        tm = L.RNN(
            L.StackedRNNCells([L.SimpleRNNCell(2), L.LSTMCell(2)]),
            time_major=True,
            return_sequences=True,
            return_state=True,
            name="tm",
        )
        outs += _flatten(klib, tm(inp))
    model = klib.Model(inp, outs, name="stateful_stack")
    randomize_biases(model, np.random.default_rng(0))
    rng = np.random.default_rng(5)
    calls = [rng.standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32) for _ in range(2)]
    expected = [keras_outputs(model, [x]) for x in calls]  # the second call starts from the first's states
    for fmt in FORMATS:
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        for k, (x, want) in enumerate(zip(calls, expected)):
            got = converted(x)
            for j, (g, e) in enumerate(zip(got if isinstance(got, list) else [got], want)):
                assert_close(g, e, what=f".{fmt} call {k} output {j}")


def test_tf_keras_stacked_initial_state_nested_in_the_call(tmp_path):
    """tf_keras writes ``initial_state=[[h, c], h2]`` of a stack as nested call entries."""
    k = import_keras("tf_keras")
    seed(k)
    x, h0, c0, g0 = k.Input((STEPS, FEATURES)), k.Input((3,)), k.Input((3,)), k.Input((2,))
    cells = k.layers.StackedRNNCells([k.layers.LSTMCell(3), k.layers.GRUCell(2)])
    model = k.Model(
        [x, h0, c0, g0], k.layers.RNN(cells, return_sequences=True, name="stack")(x, initial_state=[[h0, c0], g0])
    )
    rng = np.random.default_rng(2)
    inputs = [
        rng.standard_normal(s).astype("float32") for s in ((BATCH, STEPS, FEATURES), (BATCH, 3), (BATCH, 3), (BATCH, 2))
    ]
    expected = keras_outputs(model, inputs)[0]
    for fmt in FORMATS:
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        with torch.inference_mode():
            assert_close(converted(*inputs), expected, ATOL["cpu_float32"], f"stack with initial_state ({fmt})")


# ---------------------------------------------------------------------------- Bidirectional with a backward_layer


@pytest.mark.keras
def test_bidirectional_explicit_backward_rnn(klib, tmp_path):
    """Bidirectional(RNN(cell), backward_layer=RNN(cell', go_backwards=True)): the weights split at the
    forward cell's array count (LSTMCell with and without bias, a StackedRNNCells summed over its cells)."""
    seed(klib)
    layers = klib.layers
    inp = klib.Input((STEPS, FEATURES))
    same = layers.Bidirectional(
        layers.RNN(layers.LSTMCell(3)), backward_layer=layers.RNN(layers.LSTMCell(3), go_backwards=True), name="same"
    )(inp)
    no_bias = layers.Bidirectional(
        layers.RNN(layers.LSTMCell(3), return_sequences=True),
        backward_layer=layers.RNN(layers.LSTMCell(3, use_bias=False), go_backwards=True, return_sequences=True),
        merge_mode="sum",
        name="no_bias",
    )(inp)
    stack = layers.StackedRNNCells([layers.SimpleRNNCell(3, use_bias=False), layers.GRUCell(2, use_bias=False)])
    stacked = layers.Bidirectional(
        layers.RNN(layers.GRUCell(2)), backward_layer=layers.RNN(stack, go_backwards=True), name="stacked"
    )(inp)
    model = klib.Model(inp, [same, no_bias, stacked], name="bi_backward_rnn")
    randomize_biases(model, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)
    reference = keras_reference(klib, model, [x])
    for fmt in FORMATS:
        assert_model_parity(klib, model, tlp.load_keras(save(model, tmp_path, fmt)), [x], reference=reference)


def test_bidirectional_halves_of_unknown_sizes_are_refused():
    """Halves of different kinds, neither with a known number of arrays: the split point is unknown.
    With one half known, the other takes the remaining arrays."""
    ctx = Context(source="t.keras", keras_version=KerasVersion(3, 10))
    custom_rnn = {"class_name": "my>Recurrent", "config": {"units": 2, "name": "f"}}
    custom_cell = {"class_name": "my>PeepholeCell", "config": {"units": 2}}
    backward = {"class_name": "RNN", "config": {"cell": custom_cell, "go_backwards": True, "name": "b"}}
    lstm = {"class_name": "RNN", "config": {"cell": _cell("LSTMCell", use_bias=False), "name": "l"}}
    weights = _arrays(FEATURES, 2, 4) + _arrays(FEATURES, 2, 4)[:2]
    spec = LayerSpec(name="bi", class_name="Bidirectional", config={}, weights=weights)
    with pytest.raises(UnsupportedOptionError, match=r"'bi'.*'RNN\(my>PeepholeCell\)'.*'my>Recurrent'.*split"):
        _split_weights(spec, ctx, custom_rnn, backward, True)
    forward, rest = _split_weights(spec, ctx, custom_rnn, lstm, True)
    assert (len(forward), len(rest)) == (3, 2)
