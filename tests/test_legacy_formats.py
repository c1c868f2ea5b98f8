"""Older Keras generations: Keras 1 files, Keras 2.0-2.2 files and CuDNNLSTM / CuDNNGRU layouts.

The golden files under ``tests/goldens/legacy/`` come from ``scripts/make_legacy_goldens.py``.
Keras 1.x and standalone Keras 2.0-2.2 cannot be installed next to a current TensorFlow, so the
script writes those files with h5py following the layout each version wrote (attributes,
Sequential config format, weight names, array order). Their reference outputs come from an
independent float64 numpy implementation of the layer equations in the script, which reads the
arrays in the stored (legacy) layout; the script then checks every reference against tf_keras
(through tf_keras' own legacy weight converters) before writing it. The torch-only tests below
compare every layer's output with the stored reference; the ``keras`` tests redo the tf_keras
cross-check live.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch_lstm_probe.converters.common import Context
from torch_lstm_probe.converters.legacy import modernize_rnn
from torch_lstm_probe.converters.spec import KerasVersion, LayerSpec

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_close
from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError

LEGACY = Path(__file__).parent / "goldens" / "legacy"
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_legacy_goldens.py"
ALL_CASES = sorted(p.stem for p in LEGACY.glob("*.safetensors"))


def load_reference(case: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(str(LEGACY / f"{case}.safetensors"), framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def load_case(case: str, folder: Path = LEGACY, **kwargs) -> tlp.KerasModel:
    arch = folder / f"{case}.json"
    if arch.exists():  # architecture JSON + weights-only h5
        return tlp.load_keras(arch, weights=folder / f"{case}.h5", **kwargs)
    return tlp.load_keras(folder / f"{case}.h5", **kwargs)


def check_case(case: str, folder: Path = LEGACY, atol: float = ATOL["cpu_float32"]) -> tlp.KerasModel:
    """Loads ``case`` and compares every layer's output and the model output with the reference."""
    arrays, _ = load_reference(case)
    model = load_case(case, folder)
    x = arrays["input:0"]
    acts = tlp.probe(model, x)
    layer_keys = [k for k in arrays if k.startswith("layer:")]
    assert layer_keys
    for key in layer_keys:
        name = key[len("layer:") :]
        assert name in acts, f"probe lacks {name!r}; has {sorted(acts)}"
        assert_close(acts[name], arrays[key], atol, f"{case} layer {name}")
    with torch.inference_mode():
        out = model(x)
    assert_close(out, arrays["output:0"], atol, f"{case} output")
    return model


def ctx(version: KerasVersion) -> Context:
    return Context("<test>", version)


# ======================================================================================
# Torch-only parity with the committed goldens
# ======================================================================================


def test_all_legacy_goldens_present():
    assert len(ALL_CASES) == 13, ALL_CASES
    for case in ALL_CASES:
        assert (LEGACY / f"{case}.h5").exists(), case


def test_keras1_lstm_masked():
    """Keras 1.2.2 (TensorFlow backend): Embedding(mask_zero) -> LSTM(12 arrays, consume_less='cpu')
    -> Dropout(p) -> LSTM(12 arrays, 'mem', go_backwards) -> Dense(softmax), with right-padded
    and holed masks.

    Written with h5py from the published Keras 1.2.2 layout (Sequential config as a layer list,
    ``lstm_1_W_i:0`` names in i, c, f, o order, no ``keras_version`` on ``model_weights``).
    Cross-checked: tf_keras' ``load_weights`` on this file (its Keras 1 converter) into an
    equivalent tf_keras model with hard_sigmoid gives the reference within 1e-5.
    """
    model = check_case("keras1_lstm_masked")
    assert model.source_info["keras_version"].startswith("1.")


def test_keras1_bidirectional_lstm():
    """Keras 1.2.2: Embedding(mask_zero) -> Bidirectional(LSTM, concat) -> Dense; the wrapper's
    group lists the forward half's 12 arrays (``forward_lstm_1_W_i:0`` ...) then the backward's.

    Written with h5py from the published Keras 1.2.2 layout. Cross-checked: tf_keras'
    ``load_weights`` (which converts each half from Keras 1) into Bidirectional(LSTM(hard_sigmoid)).
    """
    check_case("keras1_bidirectional_lstm")


def test_keras1_lstm_gpu_noversion():
    """A Keras 1 file without ``keras_version`` (Theano-style names without ``:0``); LSTMs saved
    with consume_less='gpu' (3 packed arrays), the first with no activation keys in its config
    (Keras 1 defaults tanh / hard_sigmoid apply), the second relu / sigmoid.

    Written with h5py from the published Keras 1 layout. Cross-checked: tf_keras'
    ``load_weights`` (which treats a missing version as Keras 1) into equivalent tf_keras LSTMs.
    """
    model = check_case("keras1_lstm_gpu_noversion")
    assert model.source_info["keras_version"] == "1.0.0"


def test_keras1_gru():
    """Keras 1.2.2: GRU with 9 arrays (z, r, h; consume_less='cpu') -> GRU with 3 packed arrays
    (consume_less='gpu', go_backwards) -> Dense. Keras 1 GRUs reset before the matmul.

    Written with h5py from the published Keras 1.2.2 layout. Cross-checked: tf_keras'
    ``load_weights`` into GRU(reset_after=False, recurrent_activation='hard_sigmoid').
    """
    check_case("keras1_gru")


def test_keras1_simplernn():
    """Keras 1.2.2: SimpleRNN(tanh, seq) -> SimpleRNN(relu).

    Written with h5py from the published Keras 1.2.2 layout. Cross-checked: tf_keras'
    ``load_weights`` into equivalent tf_keras SimpleRNN layers.
    """
    check_case("keras1_simplernn")


def test_keras2_0_8_lstm_implicit_defaults():
    """Keras 2.0.8 LSTM configs that lack ``activation`` and ``recurrent_activation``: the
    defaults of Keras < 2.3 (tanh / hard_sigmoid with 0.2x + 0.5) apply, not sigmoid.

    Written with h5py from the published Keras 2.0.8 layout (list config, ``lstm_1/kernel:0``).
    Cross-checked: tf_keras ``load_weights`` into LSTMs with an explicit hard_sigmoid (tf_keras'
    own default would be sigmoid).
    """
    check_case("keras2_0_8_lstm_implicit_defaults")


def test_keras2_1_6_lstm():
    """Keras 2.1.6: LSTM(hard_sigmoid, seq) -> LSTM(relu, use_bias=False) -> Dense, Sequential
    config as a bare layer list.

    Written with h5py from the published Keras 2.1.6 layout. Cross-checked:
    ``tf_keras.models.load_model`` on the file itself.
    """
    check_case("keras2_1_6_lstm")


def test_keras2_2_4_lstm():
    """Keras 2.2.4: LSTM(hard_sigmoid, seq, go_backwards) -> LSTM(relu, use_bias=False) -> Dense,
    Sequential config as ``{"name", "layers"}``.

    Written with h5py from the published Keras 2.2.4 layout. Cross-checked:
    ``tf_keras.models.load_model`` on the file itself.
    """
    check_case("keras2_2_4_lstm")


def test_keras2_2_4_gru():
    """Keras 2.2.4: GRU(reset_after=False, hard_sigmoid) -> GRU(reset_after=True, sigmoid,
    go_backwards) -> Dense.

    Written with h5py from the published Keras 2.2.4 layout. Cross-checked:
    ``tf_keras.models.load_model`` on the file itself.
    """
    check_case("keras2_2_4_gru")


def test_cudnn_keras2_2_4():
    """Standalone Keras 2.2.4 CuDNNLSTM -> CuDNNGRU -> Dense (bias (8u,) and (6u,), kernels in
    cuDNN's per-gate layout), converted to LSTM and GRU(reset_after=True).

    Written with h5py from the published Keras 2.2.4 CuDNN layout (``cu_dnnlstm_1/kernel:0``).
    The reference reads each gate block as cuDNN does (row-major ``(units, features)``).
    Cross-checked: tf_keras LSTM / GRU(reset_after=True) whose weights come from tf_keras'
    ``preprocess_weights_for_loading`` on the stored arrays, and from ``load_weights(file)``.
    """
    model = check_case("cudnn_keras2_2_4")
    assert type(model.layer("cu_dnnlstm_1")).__name__ == "LSTM"
    assert type(model.layer("cu_dnngru_1")).__name__ == "GRU"


def test_cudnn_tf_keras():
    """CuDNNLSTM(go_backwards) -> CuDNNGRU -> Dense built and saved by tf_keras itself (the
    layers can be built and saved on a CPU; only running them needs cuDNN).

    Cross-checked like ``cudnn_keras2_2_4``: tf_keras' ``preprocess_weights_for_loading`` into
    LSTM / GRU(reset_after=True), and ``load_weights`` on the file.
    """
    model = check_case("cudnn_tf_keras")
    assert model.source_info["library"] == "tf_keras"


def test_lstm_arch_cudnn_weights():
    """An LSTM architecture JSON (Keras 2.2.4 ``to_json``) with weights saved from a CuDNNLSTM:
    the LSTM layer receives a (8u,) bias and cuDNN-layout kernels, as tf_keras allows.

    Written as JSON + h5py from the published Keras 2.2.4 ``to_json`` / ``save_weights``
    layouts. Cross-checked: ``tf_keras.models.model_from_json(arch).load_weights(weights)``.
    """
    check_case("lstm_arch_cudnn_weights")


def test_cudnn_arch_lstm_weights():
    """The reverse: a CuDNNLSTM architecture with weights saved from a plain LSTM (bias (4u,)),
    which are already in the Keras layout.

    Written as JSON + h5py from the published Keras 2.2.4 layouts. Cross-checked: tf_keras
    loads the LSTM arrays into the CuDNNLSTM model (converting them to cuDNN layout); converting
    those back with ``preprocess_weights_for_loading`` gives the LSTM arrays, run in a tf_keras LSTM.
    """
    check_case("cudnn_arch_lstm_weights")


@pytest.mark.parametrize("case", ALL_CASES)
def test_legacy_golden_save_load_roundtrip(case: str, tmp_path: Path):
    """A converted legacy model saves to safetensors and loads again without Keras."""
    model = load_case(case)
    tlp.save(model, tmp_path / "m.safetensors")
    again = tlp.load(tmp_path / "m.safetensors")
    arrays, _ = load_reference(case)
    with torch.inference_mode():
        assert_close(again(arrays["input:0"]), arrays["output:0"], ATOL["cpu_float32"], case)


# ======================================================================================
# modernize_rnn as a pure function
# ======================================================================================


def _keras1_lstm_spec(features=2, units=3, consume_less="cpu", **config):
    """A Keras 1 LSTM spec whose arrays are filled with a per-array constant (0, 1, 2, ...)."""
    cfg = {
        "name": "lstm_1",
        "trainable": True,
        "return_sequences": False,
        "go_backwards": False,
        "stateful": False,
        "unroll": False,
        "consume_less": consume_less,
        "input_dim": features,
        "input_length": None,
        "output_dim": units,
        "init": "glorot_uniform",
        "inner_init": "orthogonal",
        "forget_bias_init": "one",
        "activation": "tanh",
        "inner_activation": "hard_sigmoid",
        "W_regularizer": None,
        "U_regularizer": None,
        "b_regularizer": None,
        "dropout_W": 0.0,
        "dropout_U": 0.0,
    }
    cfg.update(config)
    shapes = [(features, units), (units, units), (units,)] * 4
    weights = tuple(np.full(s, float(k), dtype=np.float32) for k, s in enumerate(shapes))
    return LayerSpec("lstm_1", "LSTM", cfg, weights, path="lstm_1")


def test_modernize_keras1_lstm_config_and_gate_order():
    spec = modernize_rnn(_keras1_lstm_spec(), ctx(KerasVersion(1, 2, 2)))
    assert spec.config["units"] == 3
    assert spec.config["recurrent_activation"] == "hard_sigmoid"
    assert spec.config["activation"] == "tanh"
    assert spec.config["use_bias"] is True
    for dropped in (
        "output_dim",
        "inner_activation",
        "consume_less",
        "init",
        "inner_init",
        "forget_bias_init",
        "W_regularizer",
        "U_regularizer",
        "b_regularizer",
        "dropout_W",
        "dropout_U",
        "input_dim",
        "input_length",
    ):
        assert dropped not in spec.config
    kernel, recurrent, bias = spec.weights
    assert kernel.shape == (2, 12) and recurrent.shape == (3, 12) and bias.shape == (12,)
    # stored i (0, 1, 2), c (3, 4, 5), f (6, 7, 8), o (9, 10, 11) -> packed i, f, c, o
    assert [kernel[0, 3 * g] for g in range(4)] == [0, 6, 3, 9]
    assert [recurrent[0, 3 * g] for g in range(4)] == [1, 7, 4, 10]
    assert [bias[3 * g] for g in range(4)] == [2, 8, 5, 11]


def test_modernize_is_idempotent():
    c = ctx(KerasVersion(1, 2, 2))
    once = modernize_rnn(_keras1_lstm_spec(), c)
    assert modernize_rnn(once, c) is once


def test_modernize_keras1_missing_activations_use_keras1_defaults():
    spec = _keras1_lstm_spec()
    cfg = {k: v for k, v in spec.config.items() if k not in ("activation", "inner_activation")}
    out = modernize_rnn(dataclasses.replace(spec, config=cfg), ctx(KerasVersion(1)))
    assert out.config["activation"] == "tanh"
    assert out.config["recurrent_activation"] == "hard_sigmoid"


def test_modernize_keras1_inner_activation_is_read_from_config():
    out = modernize_rnn(_keras1_lstm_spec(inner_activation="sigmoid", activation="relu"), ctx(KerasVersion(1)))
    assert out.config["recurrent_activation"] == "sigmoid"
    assert out.config["activation"] == "relu"


def test_modernize_keras1_gpu_layout_passes_through():
    features, units = 2, 3
    weights = (
        np.ones((features, 4 * units), np.float32),
        np.ones((units, 4 * units), np.float32),
        np.arange(4 * units, dtype=np.float32),
    )
    spec = dataclasses.replace(_keras1_lstm_spec(consume_less="gpu"), weights=weights)
    out = modernize_rnn(spec, ctx(KerasVersion(1)))
    assert all(a is b for a, b in zip(out.weights, weights))


def test_modernize_keras1_gru_and_simplernn():
    features, units = 2, 3
    shapes = [(features, units), (units, units), (units,)] * 3
    weights = tuple(np.full(s, float(k), np.float32) for k, s in enumerate(shapes))
    cfg = {
        "name": "gru_1",
        "output_dim": units,
        "activation": "tanh",
        "inner_activation": "hard_sigmoid",
        "consume_less": "mem",
        "init": "glorot_uniform",
        "inner_init": "orthogonal",
    }
    out = modernize_rnn(LayerSpec("gru_1", "GRU", cfg, weights), ctx(KerasVersion(1, 2, 2)))
    assert out.config["reset_after"] is False
    kernel, recurrent, bias = out.weights
    assert [kernel[0, 3 * g] for g in range(3)] == [0, 3, 6]  # z, r, h kept in order
    assert [bias[3 * g] for g in range(3)] == [2, 5, 8]
    rnn_cfg = {
        "name": "simplernn_1",
        "output_dim": units,
        "activation": "relu",
        "init": "glorot_uniform",
        "inner_init": "orthogonal",
        "consume_less": "cpu",
        "dropout_W": 0.0,
        "dropout_U": 0.0,
    }
    rnn = modernize_rnn(LayerSpec("simplernn_1", "SimpleRNN", rnn_cfg, weights[:3]), ctx(KerasVersion(1)))
    assert rnn.config == {"name": "simplernn_1", "units": units, "activation": "relu", "use_bias": True}
    assert "recurrent_activation" not in rnn.config


@pytest.mark.parametrize(
    "version, expected",
    [
        (KerasVersion(2, 0, 8), "hard_sigmoid"),
        (KerasVersion(2, 2, 4), "hard_sigmoid"),
        (KerasVersion(2, 3, 0), None),
        (KerasVersion(2, 21, 0), None),
        (KerasVersion(3, 15, 1), None),
    ],
)
def test_recurrent_activation_default_depends_on_version(version, expected):
    spec = LayerSpec("lstm_1", "LSTM", {"name": "lstm_1", "units": 2}, ())
    out = modernize_rnn(spec, ctx(version))
    assert out.config.get("recurrent_activation") == expected
    explicit = LayerSpec("lstm_1", "LSTM", {"name": "lstm_1", "units": 2, "recurrent_activation": "sigmoid"}, ())
    assert modernize_rnn(explicit, ctx(version)) is explicit


def _cudnn_by_hand(kernel, recurrent, n):
    """Per gate: the stored (F, u) block read row-major as cuDNN's (u, F) matrix, transposed."""
    features, units = kernel.shape[0], recurrent.shape[0]
    ks = [kernel[:, g * units : (g + 1) * units].flatten().reshape(units, features).T for g in range(n)]
    rs = [recurrent[:, g * units : (g + 1) * units].T for g in range(n)]
    return np.concatenate(ks, axis=1), np.concatenate(rs, axis=1)


@pytest.mark.parametrize("cls, n", [("LSTM", 4), ("GRU", 3)])
def test_modernize_converts_cudnn_layout(cls, n):
    rng = np.random.default_rng(0)
    features, units = 5, 3
    kernel = rng.standard_normal((features, n * units)).astype(np.float32)
    recurrent = rng.standard_normal((units, n * units)).astype(np.float32)
    bias = rng.standard_normal(2 * n * units).astype(np.float32)
    cfg = {"name": "rnn", "units": units, "recurrent_activation": "sigmoid"}
    if cls == "GRU":
        cfg["reset_after"] = True
    out = modernize_rnn(LayerSpec("rnn", cls, cfg, (kernel, recurrent, bias)), ctx(KerasVersion(2, 2, 4)))
    want_k, want_r = _cudnn_by_hand(kernel, recurrent, n)
    np.testing.assert_array_equal(out.weights[0], want_k)
    np.testing.assert_array_equal(out.weights[1], want_r)
    if cls == "LSTM":
        np.testing.assert_allclose(out.weights[2], bias[: 4 * units] + bias[4 * units :])
    else:
        np.testing.assert_array_equal(out.weights[2], bias.reshape(2, 3 * units))
    assert modernize_rnn(out, ctx(KerasVersion(2, 2, 4))) is out


def test_cudnn_class_spec_becomes_lstm():
    cfg = {
        "name": "cu",
        "trainable": True,
        "units": 2,
        "return_sequences": True,
        "return_state": False,
        "go_backwards": True,
        "stateful": False,
        "unit_forget_bias": True,
        "kernel_initializer": None,
    }
    out = modernize_rnn(LayerSpec("cu", "CuDNNLSTM", cfg, ()), ctx(KerasVersion(2, 2, 4)))
    assert out.class_name == "LSTM"
    assert out.config["activation"] == "tanh" and out.config["recurrent_activation"] == "sigmoid"
    assert out.config["go_backwards"] is True and out.config["return_sequences"] is True


# ======================================================================================
# Errors
# ======================================================================================


def _edit_weight_names(src: Path, dst: Path, layer: str, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        g = f["model_weights"][layer]
        g.attrs["weight_names"] = np.array(edit(list(g.attrs["weight_names"])))
    return dst


def test_keras1_lstm_wrong_array_count_names_layer_and_shapes(tmp_path: Path):
    bad = _edit_weight_names(LEGACY / "keras1_lstm_masked.h5", tmp_path / "bad.h5", "lstm_1", lambda n: n[:-1])
    with pytest.raises(
        WeightMismatchError,
        match=r"layer 'lstm_1' \(LSTM\): a Keras 1 LSTM stores 12 arrays .* or 3 arrays .* The file has 11 "
        r"array\(s\) with shapes \[\(4, 3\), \(3, 3\), \(3,\), ",
    ):
        tlp.load_keras(bad)


def test_keras1_lstm_wrong_gate_shape_names_the_array(tmp_path: Path):
    bad = tmp_path / "bad_shape.h5"
    shutil.copy(LEGACY / "keras1_lstm_masked.h5", bad)
    with h5py.File(bad, "a") as f:
        g = f["model_weights"]["lstm_2"]
        del g["lstm_2_U_f:0"]
        g.create_dataset("lstm_2_U_f:0", data=np.zeros((2, 3), np.float32))
    with pytest.raises(
        WeightMismatchError,
        match=r"layer 'lstm_2' \(LSTM\): Keras 1 weight U_f has shape \(2, 3\)\. "
        r"Expected \(2, 2\)",
    ):
        tlp.load_keras(bad)


def test_cudnn_gru_weights_refused_by_gru_reset_before():
    rng = np.random.default_rng(1)
    weights = (rng.standard_normal((4, 6)), rng.standard_normal((2, 6)), rng.standard_normal(12))
    spec = LayerSpec("gru_1", "GRU", {"name": "gru_1", "units": 2, "reset_after": False}, weights, path="gru_1")
    with pytest.raises(
        WeightMismatchError,
        match=r"layer 'gru_1' \(GRU\): the bias has shape \(12,\), the layout of "
        r"CuDNNGRU weights, but the layer has reset_after=False",
    ):
        modernize_rnn(spec, ctx(KerasVersion(2, 2, 4)))
    old = LayerSpec("gru_1", "GRU", {"name": "gru_1", "units": 2}, weights, path="gru_1")  # Keras 2.2 default
    with pytest.raises(WeightMismatchError, match="reset_after=False"):
        modernize_rnn(old, ctx(KerasVersion(2, 2, 4)))


def test_cudnn_unknown_config_key_is_refused(tmp_path: Path):
    import json

    arch = json.loads((LEGACY / "cudnn_arch_lstm_weights.json").read_text())
    arch["config"]["layers"][0]["config"]["activation"] = "relu"  # CuDNNLSTM has no such option
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    with pytest.raises(UnsupportedOptionError, match=r"layer 'rnn' \(CuDNNLSTM\) has config key\(s\) \['activation'\]"):
        tlp.load_keras(path, weights=LEGACY / "cudnn_arch_lstm_weights.h5")


def test_keras1_unknown_key_is_refused(tmp_path: Path):
    spec = _keras1_lstm_spec(W_constraint="maxnorm")  # no Keras 1 LSTM wrote this key
    from torch_lstm_probe.converters.recurrent import convert_lstm

    with pytest.raises(UnsupportedOptionError, match=r"\['W_constraint'\]"):
        convert_lstm(spec, ctx(KerasVersion(1, 2, 2)))


# ======================================================================================
# Live tf_keras cross-checks
# ======================================================================================


def _script():
    name = "make_legacy_goldens"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.keras
@pytest.mark.parametrize("case", ALL_CASES)
def test_live_tf_keras_cross_check(case: str, tmp_path: Path):
    """Rewrites the case, checks the numpy reference against tf_keras, and checks that the
    committed golden equals the rewritten one and that the converted model matches it."""
    pytest.importorskip("tf_keras")
    script = _script()
    golden = script.build_case(case, tmp_path)
    assert script.cross_check(golden) <= ATOL["cpu_float32"]
    script.save_reference(golden, case, tmp_path)
    committed, _ = load_reference(case)
    with safe_open(str(tmp_path / f"{case}.safetensors"), framework="np") as f:
        fresh = {k: f.get_tensor(k) for k in f.keys()}
    assert sorted(fresh) == sorted(committed)
    for key in committed:
        np.testing.assert_allclose(fresh[key], committed[key], atol=1e-6, err_msg=key)
    check_case(case, folder=tmp_path)


@pytest.mark.keras
@pytest.mark.parametrize("cls, n", [("LSTM", 4), ("GRU", 3)])
def test_live_cudnn_conversion_equals_tf_keras(cls, n):
    """The package's cuDNN → Keras conversion equals tf_keras' ``preprocess_weights_for_loading``."""
    K = pytest.importorskip("tf_keras")
    from tf_keras.src.saving.legacy import hdf5_format

    rng = np.random.default_rng(7)
    features, units = 5, 3
    stored = [
        rng.standard_normal((features, n * units)).astype(np.float32),
        rng.standard_normal((units, n * units)).astype(np.float32),
        rng.standard_normal(2 * n * units).astype(np.float32),
    ]
    layer = K.layers.LSTM(units) if cls == "LSTM" else K.layers.GRU(units, reset_after=True)
    layer.build((None, 7, features))
    expected = hdf5_format.preprocess_weights_for_loading(layer, list(stored), "2.2.4", "tensorflow")
    cfg = {"name": "rnn", "units": units, "recurrent_activation": "sigmoid", "reset_after": True}
    got = modernize_rnn(LayerSpec("rnn", cls, cfg, tuple(stored)), ctx(KerasVersion(2, 2, 4))).weights
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6)


@pytest.mark.keras
def test_live_cudnn_kernels_are_not_in_keras_layout():
    """Reading CuDNNLSTM kernels as if they were already in the Keras layout (only summing the
    two biases) gives different outputs from tf_keras' conversion: the per-gate step matters."""
    K = pytest.importorskip("tf_keras")
    from tf_keras.src.saving.legacy import hdf5_format

    rng = np.random.default_rng(3)
    features, units = 5, 4
    kernel, recurrent = rng.uniform(-0.6, 0.6, (features, 4 * units)), rng.uniform(-0.6, 0.6, (units, 4 * units))
    bias = rng.uniform(-0.3, 0.3, 8 * units)
    x = rng.standard_normal((2, 6, features)).astype(np.float32)
    model = K.Sequential([K.layers.LSTM(units, return_sequences=True)])
    model.build((None, 6, features))
    model.layers[0].set_weights(hdf5_format.preprocess_weights_for_loading(model.layers[0], [kernel, recurrent, bias]))
    converted = np.asarray(model(x))
    model.layers[0].set_weights([kernel, recurrent, bias[: 4 * units] + bias[4 * units :]])
    naive = np.asarray(model(x))
    assert np.max(np.abs(converted - naive)) > 1e-2
