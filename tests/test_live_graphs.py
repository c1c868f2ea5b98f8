"""Functional graphs against Keras: several inputs/outputs, shared layers (every call), nested
models, seq2seq with initial_state and a decoder-step model, Keras 3 op nodes, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_lstm_probe.converters.inspect import format_report, inspect_model

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_close, keras_outputs, randomize_biases, save, seed

pytestmark = pytest.mark.keras


def _call_output(klib, layer, n):
    """The output tensor(s) of the n-th call of a Keras layer."""
    if hasattr(layer, "get_output_at"):
        return layer.get_output_at(n)
    return (
        layer._inbound_nodes[n].output_tensors
        if len(layer._inbound_nodes[n].output_tensors) > 1
        else layer._inbound_nodes[n].output_tensors[0]
    )


def _keras_values(klib, model, tensors, inputs):
    probe = klib.Model(model.inputs, tensors)
    out = probe(inputs if len(inputs) > 1 else inputs[0], training=False)
    return [np.asarray(v) for v in (out if isinstance(out, (list, tuple)) else [out])]


def shared_model(klib):
    L = klib.layers
    a, b = klib.Input((6, 3), name="a"), klib.Input((6, 3), name="b")
    shared = L.LSTM(4, return_sequences=True, name="shared")
    ya, yb = shared(a), shared(b)
    merged = L.Concatenate(name="cat")([ya, yb])
    last = L.LSTM(3, name="top")(merged)
    return klib.Model([a, b], [L.Dense(2, name="head")(last), ya])


def nested_model(klib):
    L = klib.layers
    inner = klib.Sequential(
        [L.LSTM(4, return_sequences=True, name="in_lstm"), L.Dense(3, name="in_dense")], name="inner"
    )
    f_in = klib.Input((6, 3))
    func = klib.Model(f_in, L.LSTM(2, name="f_lstm")(f_in), name="func")
    inp = klib.Input((6, 3), name="x")
    return klib.Model(inp, func(inner(inp)))


def seq2seq_model(klib):
    L = klib.layers
    enc_in, dec_in = klib.Input((7, 3), name="enc_in"), klib.Input((5, 2), name="dec_in")
    _, h, c = L.LSTM(4, return_state=True, name="encoder")(enc_in)
    dec = L.LSTM(4, return_sequences=True, return_state=True, name="decoder")
    y, _, _ = dec(dec_in, initial_state=[h, c])
    return klib.Model([enc_in, dec_in], L.TimeDistributed(L.Dense(6), name="proj")(y))


def decoder_step_model(klib):
    L = klib.layers
    tok, h, c = klib.Input((1, 2), name="tok"), klib.Input((4,), name="h_in"), klib.Input((4,), name="c_in")
    y, h2, c2 = L.LSTM(4, return_state=True, name="dec")(tok, initial_state=[h, c])
    return klib.Model([tok, h, c], [L.Dense(6, name="proj")(y), h2, c2])


BUILDERS = {
    "shared": shared_model,
    "nested": nested_model,
    "seq2seq": seq2seq_model,
    "decoder_step": decoder_step_model,
}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_graph_outputs_and_save_load(klib, tmp_path, kind, fmt):
    seed(klib)
    model = BUILDERS[kind](klib)
    randomize_biases(model, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((2, *tuple(i.shape[1:]))).astype(np.float32) for i in model.inputs]
    expected = keras_outputs(model, inputs)
    converted = tlp.load_keras(save(model, tmp_path, fmt))
    again_path = tmp_path / "again.safetensors"
    tlp.save(converted, again_path)
    for m in (converted, tlp.load(again_path)):
        with torch.inference_mode():
            got = m(*inputs)
        got = got if isinstance(got, list) else [got]
        assert len(got) == len(expected)
        for k, (g, e) in enumerate(zip(got, expected)):
            assert_close(g, e, ATOL["cpu_float32"], f"output {k}")
    # inputs by name give the same result
    by_name = {spec["name"]: x for spec, x in zip(converted.input_specs, inputs)}
    with torch.inference_mode():
        named = converted(by_name)
    named = named if isinstance(named, list) else [named]
    assert_close(named[0], expected[0], ATOL["cpu_float32"], "named inputs")


def test_shared_layer_every_call_matches_keras(klib, tmp_path):
    seed(klib)
    model = shared_model(klib)
    randomize_biases(model, np.random.default_rng(0))
    inputs = [np.random.default_rng(k).standard_normal((2, 6, 3)).astype(np.float32) for k in (1, 2)]
    shared = model.get_layer("shared")
    expected = _keras_values(klib, model, [_call_output(klib, shared, 0), _call_output(klib, shared, 1)], inputs)
    converted = tlp.load_keras(save(model, tmp_path, "keras"))
    acts = tlp.probe(converted, inputs, gates=True)
    assert_close(acts["shared@0"], expected[0], ATOL["cpu_float32"], "call 0")
    assert_close(acts["shared@1"], expected[1], ATOL["cpu_float32"], "call 1")
    assert tuple(acts["shared@1/gates/f"].shape) == (2, 6, 4)
    assert_close(acts["shared@1/gates/h"], expected[1], ATOL["cpu_float32"], "gates of call 1")
    assert converted.call_counts()["shared"] == 2


def test_nested_layers_by_path(klib, tmp_path):
    seed(klib)
    model = nested_model(klib)
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    inner = model.get_layer("inner")
    expected = _keras_values(klib, inner, [inner.get_layer("in_lstm").output], [x])[0]
    converted = tlp.load_keras(save(model, tmp_path, "h5"))
    assert converted.layer("inner/in_lstm") is dict(converted.named_modules())["inner.in_lstm"]
    acts = tlp.probe(converted, x, layers=["inner/in_lstm", "func"], gates=True)
    assert_close(acts["inner/in_lstm"], expected, ATOL["cpu_float32"], "nested layer")
    assert "inner/in_lstm/gates/i" in acts and "func" in acts
    seen = []
    handle = converted.layer("func/f_lstm").register_forward_hook(lambda m, a, o: seen.append(o))
    converted(x)
    handle.remove()
    assert len(seen) == 1


def test_keras3_op_nodes_and_mask_ops(keras3, tmp_path):
    keras = keras3
    ops, L = keras.ops, keras.layers
    inp = keras.Input((8, 3), name="x")
    mask = ops.any(ops.not_equal(inp, 0.0), axis=-1)
    y = L.LSTM(4, return_sequences=True, name="l")(inp, mask=mask)
    pooled = ops.mean(y, axis=1) * 2.0 - ops.max(y, axis=1)
    last = y[:, -1]
    out = ops.concatenate([pooled, ops.tanh(last)], axis=-1)
    model = keras.Model(inp, [out, ops.reshape(ops.transpose(y, (0, 2, 1)), (-1, 32))])
    x = np.random.default_rng(0).standard_normal((3, 8, 3)).astype(np.float32)
    x[0, 5:] = 0
    x[1, :2] = 0
    expected = keras_outputs(model, [x])
    converted = tlp.load_keras(save(model, tmp_path, "keras"))
    with torch.inference_mode():
        got = converted(x)
    for g, e in zip(got, expected):
        assert_close(g, e, ATOL["cpu_float32"], "op graph")


def test_unsupported_op_names_its_path(keras3, tmp_path):
    keras = keras3
    inp = keras.Input((4, 3))
    y = keras.ops.cumsum(inp, axis=1)
    model = keras.Model(inp, keras.layers.LSTM(2)(y))
    with pytest.raises(
        tlp.UnsupportedLayerError, match=r"layer 'cumsum' \(Cumsum\).*keras\.src\.ops\.numpy\.Cumsum.*Supported ops"
    ):
        tlp.load_keras(save(model, tmp_path, "keras"))


def test_unsupported_layer_deep_in_graph_names_its_path(klib, tmp_path):
    L = klib.layers
    inner_in = klib.Input((6, 3))
    # Lambda holds code, so it stays refused however many layers gain converters.
    inner = klib.Model(inner_in, L.Lambda(lambda t: t * 2.0, name="deep")(inner_in), name="block")
    inp = klib.Input((6, 3))
    model = klib.Model(inp, inner(inp))
    with pytest.raises(tlp.UnsupportedLayerError, match=r"layer 'block/deep' \(Lambda\)"):
        tlp.load_keras(save(model, tmp_path, "h5"))


def test_inspect_shows_graph_shared_and_nested(klib, tmp_path):
    seed(klib)
    path = save(shared_model(klib), tmp_path, "keras")
    text = format_report(inspect_model(path))
    assert "inputs:  a (None, 6, 3) float32, b (None, 6, 3) float32" in text
    assert "outputs: head, shared@1" in text or "outputs: head, shared" in text
    assert "shared (shared, 2 calls)" in text
    nested = format_report(inspect_model(save(nested_model(klib), tmp_path, "h5")))
    assert "inner/in_lstm" in nested and "func/f_lstm" in nested
