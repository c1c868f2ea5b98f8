"""Valid Keras files that must load and match Keras on every layer: nested models in Keras 3 and
tf_keras, TimeDistributed around a nested model, custom converters inside wrappers, float token
ids for Embedding, the implicit input layer of old Sequential configs, Keras 2.11-2.12 ``.keras``
archives (``variables.h5``) and TFOpLambda nodes refused as code."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_close, library_name, randomize_biases, save, seed

pytestmark = pytest.mark.keras

STEPS, FEATURES = 6, 3


def _x(batch: int = 2, steps: int = STEPS, features: int = FEATURES, seed_value: int = 1) -> np.ndarray:
    return np.random.default_rng(seed_value).standard_normal((batch, steps, features)).astype(np.float32)


# ---------------------------------------------------------------------------- every call of every layer


def _own_calls(klib, model, layer) -> list[Any]:
    """The nodes of ``layer`` that belong to ``model``'s graph, in call order."""
    if library_name(klib) == "keras":
        from keras.src.ops.function import make_node_key

        graph = getattr(model, "_functional", None) or model
        own = graph._nodes
        return [n for i, n in enumerate(layer._inbound_nodes) if make_node_key(layer, i) in own]
    own = model._network_nodes
    return [n for i, n in enumerate(layer._inbound_nodes) if f"{layer.name}_ib-{i}" in own]


def _tensors(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def keras_calls(klib, model, inputs: Sequence[np.ndarray]) -> dict[str, list[list[np.ndarray]]]:
    """Keras' outputs of every call of every layer, nested models' layers included.

    Returns ``{path: [outputs of call 0, outputs of call 1, ...]}`` with paths as
    ``model.iter_layers()`` names them (``outer/inner``); calls in graph order.
    """
    layers = [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]
    wanted: list[tuple[Any, int, str, Any]] = []  # (layer, call, "out"/"in", tensors)
    for layer in layers:
        for n, node in enumerate(_own_calls(klib, model, layer)):
            wanted.append((layer, n, "out", _tensors(node.output_tensors)))
            if hasattr(layer, "layers") and layer.__class__.__name__ in ("Sequential", "Functional", "Model"):
                wanted.append((layer, n, "in", _tensors(node.input_tensors)))
    flat = [t for *_, ts in wanted for t in ts]
    probe_model = klib.Model(model.inputs, flat)
    values = probe_model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    values = [np.asarray(v) for v in _tensors(values)]
    result: dict[str, list[list[np.ndarray]]] = {}
    position = 0
    for layer, _n, kind, ts in wanted:
        got, position = values[position : position + len(ts)], position + len(ts)
        if kind == "out":
            result.setdefault(layer.name, []).append(got)
            continue
        for path, calls in keras_calls(klib, layer, got).items():
            result.setdefault(f"{layer.name}/{path}", []).extend(calls)
    return result


def probe_keys(calls: dict[str, list[list[np.ndarray]]]) -> dict[str, np.ndarray]:
    """``keras_calls`` flattened into tlp.probe keys (``name``, ``name:k``, ``name@n``, ``name@n:k``)."""
    out = {}
    for path, per_call in calls.items():
        for n, outputs in enumerate(per_call):
            base = f"{path}@{n}" if len(per_call) > 1 else path
            if len(outputs) == 1:
                out[base] = outputs[0]
            else:
                out.update({f"{base}:{k}": v for k, v in enumerate(outputs)})
    return out


def assert_every_call_matches(klib, keras_model, converted, inputs: Sequence[np.ndarray]) -> dict[str, Any]:
    """Every call of every layer (nested included) and every output equals Keras to ATOL."""
    expected = probe_keys(keras_calls(klib, keras_model, inputs))
    acts = tlp.probe(converted, list(inputs) if len(inputs) > 1 else inputs[0])
    assert sorted(expected) == sorted(acts), f"probe keys {sorted(acts)} != Keras calls {sorted(expected)}"
    for key, value in expected.items():
        assert_close(acts[key], value, ATOL["cpu_float32"], f"layer {key}")
    y = keras_model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    with torch.inference_mode():
        got = converted(*inputs)
    got, y = _tensors(got), _tensors(y)
    assert len(got) == len(y)
    for k, (g, e) in enumerate(zip(got, y)):
        assert_close(g, np.asarray(e), ATOL["cpu_float32"], f"output {k}")
    return acts


# ---------------------------------------------------------------------------- nested models


def _block(klib, name: str = "block"):
    L = klib.layers
    inp = klib.Input((STEPS, FEATURES))
    y = L.Dense(4, activation="tanh", name=f"{name}_dense")(inp)
    return klib.Model(inp, L.LSTM(FEATURES, return_sequences=True, name=f"{name}_lstm")(y), name=name)


def nested_twice_deep(klib):
    """A Functional inside a Functional inside a Functional, each called once."""
    L = klib.layers
    inner = _block(klib, "inner")
    mid_in = klib.Input((STEPS, FEATURES))
    mid = klib.Model(mid_in, L.Dense(2, name="mid_dense")(inner(mid_in)), name="mid")
    x = klib.Input((STEPS, FEATURES), name="x")
    return klib.Model(x, L.LSTM(2, name="top")(mid(x)), name="outer")


def shared_nested(klib):
    """One nested Functional called twice; the model outputs both calls and reads the first."""
    L = klib.layers
    block = _block(klib)
    x = klib.Input((STEPS, FEATURES), name="x")
    first = block(x)
    second = block(first)
    merged = L.Add(name="add")([first, second])
    return klib.Model(x, [second, L.LSTM(2, name="head")(merged), first], name="outer")


def sequential_in_functional(klib):
    """Sequential models (with and without an input layer) inside a Functional, one called twice."""
    L = klib.layers
    with_input = klib.Sequential(
        [klib.Input((STEPS, FEATURES)), L.Dense(4, name="s_dense"), L.LSTM(FEATURES, return_sequences=True, name="s_lstm")],
        name="with_input",
    )
    without_input = klib.Sequential([L.Dense(FEATURES, activation="relu", name="t_dense")], name="without_input")
    x = klib.Input((STEPS, FEATURES), name="x")
    a = without_input(x)
    b = with_input(a)
    c = with_input(b)
    return klib.Model(x, [c, L.LSTM(2, name="head")(without_input(c)), a], name="outer")


NESTED = {"twice_deep": nested_twice_deep, "shared": shared_nested, "sequential": sequential_in_functional}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("kind", sorted(NESTED))
def test_nested_models_match_keras_on_every_call(klib, tmp_path, kind, fmt):
    seed(klib)
    model = NESTED[kind](klib)
    randomize_biases(model, np.random.default_rng(0))
    converted = tlp.load_keras(save(model, tmp_path, fmt))
    acts = assert_every_call_matches(klib, model, converted, [_x()])
    if kind == "shared":
        assert {"block@0", "block@1", "block/block_lstm@0", "block/block_lstm@1"} <= set(acts)


# ---------------------------------------------------------------------------- TimeDistributed(model)


def td_sequential(klib):
    L = klib.layers
    inner = klib.Sequential(
        [klib.Input((4, FEATURES)), L.LSTM(5, name="step_lstm"), L.Dense(2, activation="tanh", name="step_dense")],
        name="per_step",
    )
    x = klib.Input((STEPS, 4, FEATURES), name="x")
    y = L.TimeDistributed(inner, name="td")(x)
    return klib.Model(x, L.LSTM(3, name="top")(y), name="outer")


def td_functional(klib):
    L = klib.layers
    inp = klib.Input((FEATURES,))
    a = L.Dense(4, activation="relu", name="fa")(inp)
    b = L.Dense(4, name="fb")(inp)
    inner = klib.Model(inp, L.Dense(2, name="fc")(L.Add(name="fadd")([a, b])), name="per_step")
    x = klib.Input((STEPS, FEATURES), name="x")
    y = L.TimeDistributed(inner, name="td")(x)
    return klib.Model(x, L.LSTM(3, return_sequences=True, name="top")(y), name="outer")


TD_MODELS = {"sequential": td_sequential, "functional": td_functional}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("kind", sorted(TD_MODELS))
def test_time_distributed_model_matches_keras(klib, tmp_path, kind, fmt):
    seed(klib)
    model = TD_MODELS[kind](klib)
    randomize_biases(model, np.random.default_rng(0))
    x = _x(steps=STEPS) if kind == "functional" else np.random.default_rng(2).standard_normal((2, STEPS, 4, FEATURES)).astype(np.float32)
    converted = tlp.load_keras(save(model, tmp_path, fmt))
    assert_every_call_matches(klib, model, converted, [x])
    inner = converted.layer("td").layer
    assert isinstance(inner, tlp.KerasModel) and inner.layer_names[-1] in ("step_dense", "fc")
    tlp.save(converted, tmp_path / "m.safetensors")
    assert_every_call_matches(klib, model, tlp.load(tmp_path / "m.safetensors"), [x])


def test_time_distributed_model_in_memory(klib):
    seed(klib)
    model = td_functional(klib)
    randomize_biases(model, np.random.default_rng(0))
    assert_every_call_matches(klib, model, tlp.load_keras(model), [_x()])
