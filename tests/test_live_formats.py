"""Live checks of the file formats that tlp.load_keras reads, against Keras 3 and tf_keras.

* architecture JSON (``model.to_json()``) plus a weights-only h5 (``model.save_weights``);
* a Keras-3-written legacy ``.h5`` of a Sequential model, whose weights sit under the model name;
* a tf_keras-written ``.keras`` archive;
* loading a file never imports TensorFlow or Keras.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import torch_lstm_probe as tlp
from tests.helpers import assert_model_parity, library_name, randomize_biases, save, seed

pytestmark = pytest.mark.keras

BATCH, STEPS, FEATURES = 3, 7, 5
REPO_ROOT = Path(__file__).resolve().parents[1]


def _sequential(klib, name: str = "seq_net"):
    return klib.Sequential(
        [
            klib.Input(shape=(STEPS, FEATURES)),
            klib.layers.LSTM(6, return_sequences=True, go_backwards=True, name="lstm_a"),
            klib.layers.Dropout(0.25, name="drop"),
            klib.layers.LSTM(4, recurrent_activation="hard_sigmoid", name="lstm_b"),
            klib.layers.Dense(3, activation="relu", name="dense"),
        ],
        name=name,
    )


def _functional(klib, name: str = "func_net"):
    inp = klib.Input(shape=(STEPS, FEATURES), name="x")
    seq, h, c = klib.layers.LSTM(5, return_sequences=True, return_state=True, activation="elu", name="lstm_a")(inp)
    td = klib.layers.TimeDistributed(klib.layers.Dense(2), name="td")(seq)
    last = klib.layers.LSTM(3, use_bias=False, name="lstm_b")(td)
    return klib.Model(inp, [last, h, c], name=name)


BUILDERS = {"sequential": _sequential, "functional": _functional}


def _built(klib, builder):
    seed(klib)
    model = builder(klib)
    randomize_biases(model, np.random.default_rng(0))
    return model


def _x() -> np.ndarray:
    return (np.random.default_rng(1).standard_normal((BATCH, STEPS, FEATURES)) * 2.0).astype(np.float32)


def _weights_name(klib) -> str:
    # Keras 3 insists on the ".weights.h5" suffix; tf_keras writes h5 for a plain ".h5".
    return "w.weights.h5" if library_name(klib) == "keras" else "w.h5"


def _save_json_and_weights(model, klib, tmp_path: Path) -> tuple[Path, Path]:
    arch = tmp_path / "arch.json"
    arch.write_text(model.to_json(), encoding="utf-8")
    weights = tmp_path / _weights_name(klib)
    model.save_weights(str(weights))
    return arch, weights


# ---------------------------------------------------------------------------- JSON + weights-only h5


@pytest.mark.parametrize("builder", list(BUILDERS.values()), ids=list(BUILDERS))
def test_json_plus_weights_h5(klib, tmp_path, builder):
    model = _built(klib, builder)
    arch, weights = _save_json_and_weights(model, klib, tmp_path)
    with h5py.File(weights, "r") as f:
        assert "model_config" not in f.attrs, "save_weights wrote a full model; the case would not test weights-only h5"
    converted = tlp.load_keras(str(arch), weights=str(weights))
    assert_model_parity(klib, model, converted, [_x()])
    converted = tlp.load_keras(arch, weights=weights)  # Path objects work too
    assert_model_parity(klib, model, converted, [_x()])


# ---------------------------------------------------------------------------- Keras 3 legacy h5 of a Sequential


def test_keras3_legacy_h5_sequential_weights_under_model_name(keras3, tmp_path):
    model = _built(keras3, lambda k: _sequential(k, name="my_seq_model"))
    path = save(model, tmp_path, "h5")
    with h5py.File(path, "r") as f:
        # Keras 3 nests each layer's weights under the Sequential model's name.
        groups: list[str] = []
        f["model_weights"].visit(groups.append)
        assert "lstm_a/my_seq_model/lstm_a" in groups, groups
    converted = tlp.load_keras(path)
    assert_model_parity(keras3, model, converted, [_x()])


def test_keras3_legacy_h5_functional(keras3, tmp_path):
    model = _built(keras3, lambda k: _functional(k, name="my_func_model"))
    converted = tlp.load_keras(save(model, tmp_path, "h5"))
    assert_model_parity(keras3, model, converted, [_x()])


# ---------------------------------------------------------------------------- tf_keras .keras archives


@pytest.mark.parametrize("builder", list(BUILDERS.values()), ids=list(BUILDERS))
def test_tf_keras_dot_keras(tf_keras, tmp_path, builder):
    model = _built(tf_keras, builder)
    path = save(model, tmp_path, "keras")
    converted = tlp.load_keras(path)
    assert_model_parity(tf_keras, model, converted, [_x()])
    assert converted.source_info["library"] == "tf_keras", converted.source_info


# ---------------------------------------------------------------------------- no TensorFlow at load time

_NO_TF_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import torch_lstm_probe as tlp

    cases = json.loads(sys.argv[1])
    x = np.load(cases["x"])
    expected = np.load(cases["y"])
    for source, weights in cases["files"]:
        model = tlp.load_keras(source, weights=weights)
        y = model(x)
        err = float(np.max(np.abs(y.detach().numpy() - expected)))
        assert err <= 1e-5, (source, err)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules, loaded
    assert not loaded, loaded
    print("OK", len(cases["files"]))
    """
)


def test_loading_a_file_never_imports_tensorflow(klib, tmp_path):
    """A fresh interpreter loads .keras, .h5 and JSON + weights files and runs them, without TF or Keras."""
    model = _built(klib, _sequential)
    arch, weights = _save_json_and_weights(model, klib, tmp_path)
    files = [
        [str(save(model, tmp_path, "keras")), None],
        [str(save(model, tmp_path, "h5")), None],
        [str(arch), str(weights)],
    ]
    x = _x()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x)))
    cases = {"files": files, "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy")}
    result = subprocess.run(
        [sys.executable, "-c", _NO_TF_SCRIPT, json.dumps(cases)],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and f"OK {len(files)}" in result.stdout, (
        f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    )


def test_json_plus_weights_match_by_order_when_names_differ(tf_keras, tmp_path):
    """Keras' load_weights pairs layers by order: weights saved from one instance of a model load
    into the architecture JSON of another instance whose auto-generated names differ."""
    L = tf_keras.layers

    def build():
        return tf_keras.Sequential(
            [L.InputLayer(input_shape=(6, 3)), L.LSTM(4, return_sequences=True), L.Dropout(0.2), L.LSTM(2), L.Dense(1)]
        )

    first, second = build(), build()  # second gets names lstm_2, lstm_3, dense_1 ...
    assert [layer.name for layer in first.layers] != [layer.name for layer in second.layers]
    first.save_weights(str(tmp_path / "w.h5"))
    (tmp_path / "arch.json").write_text(second.to_json())
    second.load_weights(str(tmp_path / "w.h5"))  # what Keras does: by order
    converted = tlp.load_keras(tmp_path / "arch.json", weights=tmp_path / "w.h5")
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    assert_model_parity(tf_keras, second, converted, [x])
    # A weights file with another number of weighted layers is refused, naming both lists.
    third = tf_keras.Sequential([L.InputLayer(input_shape=(6, 3)), L.LSTM(4), L.Dense(1)])
    (tmp_path / "other.json").write_text(third.to_json())
    with pytest.raises(tlp.WeightMismatchError, match=r"matched by order.*3 layer\(s\).*2 layer\(s\) with weights"):
        tlp.load_keras(tmp_path / "other.json", weights=tmp_path / "w.h5")
    assert json.loads(second.to_json())["class_name"] == "Sequential"


@pytest.fixture(scope="module")
def trained_models() -> dict[str, tuple[object, np.ndarray]]:
    """Trained models by library name, shared by the two file formats (training is the slow part)."""
    return {}


def _trained(klib, cache: dict[str, tuple[object, np.ndarray]]):
    """A Sequential model after compile() and fit(): it carries optimizer variables.

    The training step runs eagerly: one step creates the same optimizer variables as a compiled
    one (tracing the train step of a masked Bidirectional LSTM costs 10-20 s, the step itself
    under 1 s), and compile() is called as a user would, so the saved compile config is the usual one.
    """
    name = library_name(klib)
    if name not in cache:
        seed(klib)
        L = klib.layers
        first = L.InputLayer(input_shape=(6,)) if name == "tf_keras" else klib.Input((6,))
        model = klib.Sequential(
            [first, L.Embedding(20, 4, mask_zero=True), L.Bidirectional(L.LSTM(3)), L.Dense(1, activation="sigmoid")]
        )
        rng = np.random.default_rng(0)
        x = rng.integers(0, 20, (16, 6))
        model.compile("adam", "binary_crossentropy")
        model.run_eagerly = True
        model.fit(x, rng.integers(0, 2, (16, 1)), epochs=1, verbose=0)
        cache[name] = (model, x)
    return cache[name]


def _optimizer_variable_names(path: Path) -> list[str]:
    """Names of the optimizer's variables stored in a ``.h5`` or ``.keras`` file."""
    names: list[str] = []
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            f["optimizer_weights"].visit(names.append)
        return names
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
        f["optimizer"].visit(names.append)
    return names


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_trained_model_with_optimizer_state(klib, tmp_path, fmt, trained_models):
    """Files saved after compile() and fit() also hold optimizer variables; only layers are read."""
    model, x = _trained(klib, trained_models)
    path = save(model, tmp_path, fmt)
    assert _optimizer_variable_names(path), "the file holds no optimizer variables; the case would test nothing"
    converted = tlp.load_keras(path)
    assert_model_parity(klib, model, converted, [x])
