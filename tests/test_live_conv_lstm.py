"""``ConvLSTM1D``, ``ConvLSTM2D`` and ``ConvLSTM3D``, live against Keras 3 and tf_keras.

One model per library holds every case as a branch (one build, one Keras run, one save per
format): a ``Masking`` in front (whole steps masked) with ``hard_sigmoid``, ``return_sequences``,
``go_backwards``, ``return_state`` and an even kernel; an ``initial_state`` decoder and a ``Bidirectional`` wrapper on the masked input; ``padding="same"``
with strides 2, no bias and relu; dilation 2 with ``"valid"``; small ConvLSTM1D and ConvLSTM3D
layers; channels first (TensorFlow's CPU kernels accept it through both Keras generations).
Every layer's output is compared at ``ATOL["cpu_float32"]`` after loading ``.keras`` and ``.h5``.
The gates of one layer are checked against a float64 NumPy step loop written here, a
per-position mask and a stateful layer against Keras directly, and the converter's refusals
without Keras.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from converters.common import Context
from converters.conv_lstm import convert_conv_lstm
from converters.spec import KerasVersion, LayerSpec
from tests.helpers import (
    ATOL,
    assert_close,
    assert_model_parity,
    import_keras,
    keras_reference,
    randomize_biases,
    save,
    seed,
)
from torch_lstm_probe.errors import InputError, UnsupportedOptionError
from torch_lstm_probe.layers.conv_lstm import ConvLSTM, ConvLSTMConfig

BATCH, STEPS = 3, 5
FORMATS = ("keras", "h5")
GATES = ("i", "f", "g", "o", "c", "h")


# ---------------------------------------------------------------------------- the live model


def _inputs(klib) -> list[np.ndarray]:
    """``[x2, x1, x3(, x_cf)]``: 2-D maps with whole steps zeroed (masked), 1-D, 3-D (and channels-first
    2-D for tf_keras, see :func:`_build`)."""
    rng = np.random.default_rng(3)
    x2 = rng.standard_normal((BATCH, STEPS, 9, 10, 2)).astype(np.float32)
    x2[0, 3:] = 0.0  # right padding
    x2[1, :2] = 0.0  # left padding
    x2[2, 2] = 0.0  # a hole
    x1 = rng.standard_normal((BATCH, STEPS, 8, 2)).astype(np.float32)
    x3 = rng.standard_normal((BATCH, 4, 4, 5, 4, 2)).astype(np.float32)
    x_cf = rng.standard_normal((BATCH, 4, 2, 7, 6)).astype(np.float32)
    return [x2, x1, x3, x_cf] if _runs_channels_first(klib) else [x2, x1, x3]


def _runs_channels_first(klib) -> bool:
    """Whether Keras runs a channels-first ConvLSTM2D in this test process: tf_keras moves the
    channels itself; Keras 3 hands NCHW to TensorFlow, whose CPU Conv2D takes only NHWC without
    oneDNN (switched off in conftest), so Keras 3 is checked against a channels-last twin instead."""
    return klib.__name__ == "tf_keras"


def _build(klib) -> Any:
    layers = klib.layers
    seed(klib)
    in2 = klib.Input((STEPS, 9, 10, 2), name="in2")
    in1 = klib.Input((STEPS, 8, 2), name="in1")
    in3 = klib.Input((4, 4, 5, 4, 2), name="in3")
    masked = layers.Masking(0.0, name="mask")(in2)
    seq = layers.ConvLSTM2D(
        4, 3, padding="same", recurrent_activation="hard_sigmoid", return_sequences=True, name="masked_seq"
    )(masked)
    last, h, c = layers.ConvLSTM2D(3, 2, padding="same", go_backwards=True, return_state=True, name="masked_state")(seq)
    # Keras 3 runs a layer called with initial_state tensors unmasked; tf_keras applies the mask.
    decoder = layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True, name="decoder")(
        masked, initial_state=[h, c]
    )
    both = layers.Bidirectional(layers.ConvLSTM2D(2, 2, padding="same", return_sequences=True), name="bi")(masked)
    strided = layers.ConvLSTM2D(
        4, 3, padding="same", strides=2, use_bias=False, activation="relu", return_sequences=True, name="strided"
    )(in2)
    dilated = layers.ConvLSTM2D(3, (2, 3), dilation_rate=2, go_backwards=True, return_state=True, name="dilated")(
        strided
    )
    one_d = layers.ConvLSTM1D(3, 3, padding="same", go_backwards=True, return_sequences=True, name="conv1d_seq")(in1)
    one_d_valid = layers.ConvLSTM1D(2, 2, strides=2, name="conv1d_valid")(one_d)
    three_d = layers.ConvLSTM3D(2, 2, padding="same", return_sequences=True, name="conv3d")(in3)
    three_d_last = layers.ConvLSTM3D(2, (2, 3, 2), return_state=True, name="conv3d_state")(three_d)
    inputs, outputs = [in2, in1, in3], [last, decoder, both, *dilated, one_d_valid, *three_d_last]
    if _runs_channels_first(klib):
        inputs.append(klib.Input((4, 2, 7, 6), name="in_cf"))
        outputs.extend(_channels_first_layer(klib)(inputs[-1]))
    model = klib.Model(inputs, outputs, name=f"conv_lstm_{klib.__name__}")
    randomize_biases(model, np.random.default_rng(4), scale=0.3)
    return model


def _channels_first_layer(klib, data_format: str = "channels_first") -> Any:
    return klib.layers.ConvLSTM2D(
        3,
        3,
        padding="same",
        strides=2,
        data_format=data_format,
        return_sequences=True,
        return_state=True,
        name=data_format,
    )


@pytest.fixture(scope="module", params=["keras", "tf_keras"])
def live(request, tmp_path_factory) -> SimpleNamespace:
    """The model of one library, its Keras reference, and its loads from memory, ``.keras`` and ``.h5``."""
    klib = import_keras(request.param)
    model = _build(klib)
    inputs = _inputs(klib)
    folder = tmp_path_factory.mktemp(request.param)
    loads = {fmt: tlp.load_keras(str(save(model, folder, fmt))) for fmt in FORMATS}
    return SimpleNamespace(klib=klib, model=model, inputs=inputs, ref=keras_reference(klib, model, inputs), loads=loads)


@pytest.mark.keras
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_layer_matches_keras(live, fmt):
    assert_model_parity(live.klib, live.model, live.loads[fmt], live.inputs, reference=live.ref)


# ---------------------------------------------------------------------------- gates against NumPy


def _conv_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D convolution, stride 1, TensorFlow's SAME split: ``(N, H, W, C)``, ``(kh, kw, C, O)`` → ``(N, H, W, O)``."""
    kh, kw = kernel.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
    rows, cols = x.shape[1:3]
    out = np.zeros((*x.shape[:3], kernel.shape[3]))
    for dy in range(kh):
        for dx in range(kw):
            out += padded[:, dy : dy + rows, dx : dx + cols] @ kernel[dy, dx]
    return out


def _hard_sigmoid(klib) -> Any:
    if klib.__name__ == "keras":
        return lambda z: np.clip(z / 6.0 + 0.5, 0.0, 1.0)
    return lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0)


def _numpy_gates(klib, layer, x: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Every gate of a masked ``padding="same"`` ConvLSTM2D by a plain float64 step loop, ``(N, L, H, W, F)``."""
    kernel, recurrent, bias = (w.astype(np.float64) for w in layer.get_weights())
    sigma = _hard_sigmoid(klib)
    n, steps = x.shape[:2]
    filters = recurrent.shape[2]
    h = np.zeros((n, *x.shape[2:4], filters))
    c = np.zeros_like(h)
    gates: dict[str, list[np.ndarray]] = {g: [] for g in GATES}
    for t in range(steps):
        z = _conv_same(x[:, t].astype(np.float64), kernel) + bias + _conv_same(h, recurrent)
        zi, zf, zc, zo = np.split(z, 4, axis=-1)
        i, f, g, o = sigma(zi), sigma(zf), np.tanh(zc), sigma(zo)
        keep = mask[:, t, None, None, None]
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        c, h = np.where(keep, c_new, c), np.where(keep, h_new, h)
        for name, value in zip("ifgo", (i, f, g, o)):
            gates[name].append(np.where(keep, value, 0.0))
        gates["c"].append(c)
        gates["h"].append(h)
    return {name: np.stack(values, axis=1) for name, values in gates.items()}


@pytest.mark.keras
def test_gates_match_a_float64_step_loop(live):
    x2 = live.inputs[0]
    mask = np.any(x2 != 0.0, axis=(2, 3, 4))  # (N, L): whole steps are masked
    expected = _numpy_gates(live.klib, live.model.get_layer("masked_seq"), x2, mask)
    acts = tlp.probe(live.loads["keras"], live.inputs, layers=["masked_seq"], gates=True)
    for name in GATES:
        assert_close(acts[f"masked_seq/gates/{name}"], expected[name], ATOL["cpu_float32"], f"gate {name}")
    assert_close(acts["masked_seq"], expected["h"], ATOL["cpu_float32"], "output")


# ---------------------------------------------------------------------------- Keras, called directly


@pytest.mark.keras
def test_a_per_position_mask_matches_keras(live):
    """Keras masks each position when the mask has the state's spatial axes (``Masking`` on maps)."""
    x2 = live.inputs[0].copy()
    x2[2, 1, 4:] = 0.0  # part of a step: only these positions are masked
    mask = np.any(x2 != 0.0, axis=-1)  # (N, L, H, W), as Keras' Masking computes it
    layer = live.model.get_layer("masked_seq")
    expected = np.asarray(layer(x2, mask=mask))
    module = live.loads["keras"].layer("masked_seq")
    with torch.inference_mode():
        got = module(torch.from_numpy(x2), mask=torch.from_numpy(mask))
    assert_close(got, expected, ATOL["cpu_float32"], "per-position mask")


@pytest.mark.keras
@pytest.mark.parametrize("name", ["keras", "tf_keras"])
def test_stateful_carries_the_state_between_calls(name, tmp_path):
    klib = import_keras(name)
    seed(klib)
    inp = klib.Input(batch_shape=(2, 3, 5, 6, 2))
    model = klib.Model(inp, klib.layers.ConvLSTM2D(3, 2, padding="same", stateful=True, name="s")(inp))
    randomize_biases(model, np.random.default_rng(5), scale=0.3)
    rng = np.random.default_rng(6)
    first, second = (rng.standard_normal((2, 3, 5, 6, 2)).astype(np.float32) for _ in range(2))
    expected = [np.asarray(model(first)), np.asarray(model(second))]
    model.layers[-1].reset_states()
    expected.append(np.asarray(model(second)))
    loaded = tlp.load_keras(str(save(model, tmp_path, "keras")))
    with torch.inference_mode():
        got = [loaded(first), loaded(second)]
        loaded.reset_states()
        got.append(loaded(second))
    for k, (a, e) in enumerate(zip(got, expected)):
        assert_close(a, e, ATOL["cpu_float32"], f"call {k}")


@pytest.mark.keras
def test_keras3_channels_first_matches_its_channels_last_twin(tmp_path):
    """A Keras 3 channels-first file, against the channels-last twin holding the same weights."""
    klib = import_keras("keras")
    seed(klib)
    x_cf = np.random.default_rng(7).standard_normal((BATCH, 4, 2, 7, 6)).astype(np.float32)
    inp = klib.Input((4, 2, 7, 6))
    model = klib.Model(inp, _channels_first_layer(klib)(inp))
    randomize_biases(model, np.random.default_rng(8), scale=0.3)
    twin_in = klib.Input((4, 7, 6, 2))
    twin_layer = _channels_first_layer(klib, "channels_last")
    twin = klib.Model(twin_in, twin_layer(twin_in))
    twin_layer.set_weights(model.layers[-1].get_weights())
    expected = [np.asarray(v) for v in twin(np.moveaxis(x_cf, 2, -1))]
    expected = [np.moveaxis(expected[0], -1, 2)] + [np.moveaxis(v, -1, 1) for v in expected[1:]]
    loaded = tlp.load_keras(str(save(model, tmp_path, "keras")))
    with torch.inference_mode():
        got = loaded(x_cf)
    for k, (a, e) in enumerate(zip(got, expected)):
        assert_close(a, e, ATOL["cpu_float32"], f"output {k}")


# ---------------------------------------------------------------------------- without Keras


def _spec(**config: Any) -> LayerSpec:
    base = {"name": "clstm", "filters": 2, "kernel_size": [3, 3], "padding": "valid", "strides": [1, 1]}
    weights = (np.zeros((3, 3, 4, 8), np.float32), np.zeros((3, 3, 2, 8), np.float32), np.zeros(8, np.float32))
    return LayerSpec(name="clstm", class_name="ConvLSTM2D", config={**base, **config}, weights=weights)


CTX = Context(source="model.keras", keras_version=KerasVersion(3, 15))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("padding", "causal"),
        ("data_format", "channels_middle"),
        ("time_major", True),
        ("strides", [2, 2]),  # with dilation_rate 2
        ("implementation", 2),
    ],
)
def test_refuses_options_it_does_not_reproduce(option, value):
    extra = {"dilation_rate": [2, 2]} if option == "strides" else {}
    with pytest.raises(UnsupportedOptionError) as err:
        convert_conv_lstm(_spec(**{option: value}, **extra), CTX)
    message = str(err.value)
    assert "'clstm'" in message and option in message and repr(value) in message


def test_runtime_checks_inputs_masks_and_states():
    spec = convert_conv_lstm(_spec(), CTX)
    assert spec.config.recurrent_activation == "sigmoid" and spec.state_dict["weight_ih"].shape == (8, 4, 3, 3)
    module = ConvLSTM(ConvLSTMConfig(4, 2, kernel_size=(3, 3), strides=(1, 1), dilation=(1, 1)))
    x = torch.zeros(2, 3, 5, 6, 4)
    assert module(x).shape == (2, 3, 4, 2)
    with pytest.raises(InputError, match="channels"):
        module(torch.zeros(2, 3, 5, 6, 3))
    with pytest.raises(InputError, match="at least"):
        module(torch.zeros(2, 3, 2, 6, 4))
    with pytest.raises(InputError, match="mask"):
        module(x, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="initial state"):
        module(x, initial_state=[torch.zeros(2, 3, 4, 2), torch.zeros(2, 3, 3, 2)])
    assert module.get_config()["rank"] == 2 and type(module).from_config(module.get_config()).config == module.config


def test_edits_and_gate_hooks_work_on_maps():
    torch.manual_seed(0)
    module = ConvLSTM(ConvLSTMConfig(2, 3, kernel_size=(2, 2), strides=(1, 1), dilation=(1, 1), padding="same"))
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    x = torch.randn(2, 4, 5, 6, 2)
    (out, gates) = module(x, return_gates=True)
    assert gates.f.shape == (2, 4, 5, 6, 3) and torch.equal(out, gates.h[:, -1])
    seen: list[tuple[int, ...]] = []
    same = module(x, edits={"g": lambda t, v: seen.append(tuple(v.shape)) or v})
    assert seen == [(2, 5, 6, 3)] * 4 and torch.allclose(same, out)
    assert torch.count_nonzero(module(x, edits={"h": lambda t, v: torch.zeros_like(v)})) == 0
    handle = module.hook_o.register_forward_hook(lambda m, args, value: torch.zeros_like(value))
    try:
        assert torch.count_nonzero(module(x)) == 0  # o = 0 at every step makes h = 0
    finally:
        handle.remove()
