"""Bad input gets a clear, typed error: unsupported layers/options, bad files, bad inputs."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from torch_lstm_probe.errors import (
    InputError,
    KerasFileError,
    ProbeKeyError,
    UnsupportedLayerError,
    UnsupportedOptionError,
    WeightMismatchError,
)

GOLDENS = Path(__file__).parent / "goldens"
H5 = GOLDENS / "tf_keras_embedding_classifier.h5"
H5_STACKED = GOLDENS / "tf_keras_lstm_u16_stacked.h5"
ZIP = GOLDENS / "keras_embedding_classifier.keras"


def rewrite_h5_config(src: Path, dst: Path, edit) -> Path:
    """Copies an .h5 model and rewrites its model_config JSON with ``edit(config)``."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config)
    return dst


def rewrite_zip(src: Path, dst: Path, edit_config=None, drop: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            if item in drop:
                continue
            data = zin.read(item)
            if item == "config.json" and edit_config is not None:
                config = json.loads(data)
                edit_config(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return dst


def layers_of(config: dict) -> list[dict]:
    return config["config"]["layers"]


def find_layer(config: dict, class_name: str) -> dict:
    return next(layer for layer in layers_of(config) if layer["class_name"] == class_name)


# ---------------------------------------------------------------- unsupported layers / options
def test_unknown_layer_class_names_file_layer_and_supported(tmp_path):
    def edit(config):
        find_layer(config, "Dense")["class_name"] = "FancyAttention"

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(
        UnsupportedLayerError,
        match=r"m\.h5: layer 'dense_\d+' \(FancyAttention\).*Supported classes: .*LSTM.*custom_layers",
    ):
        tlp.load_keras(path)


def test_lambda_layer_is_refused_with_custom_layers_hint(tmp_path):
    def edit(config):
        layer = find_layer(config, "Activation")
        layer["class_name"] = "Lambda"
        layer["config"] = {
            "name": layer["config"]["name"],
            "function": ["4wEAAAAAAAAA", None, None],
            "function_type": "lambda",
        }

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(
        UnsupportedLayerError, match=r"\(Lambda\) holds Python code.*never executes code.*custom_layers"
    ):
        tlp.load_keras(path)


@pytest.mark.parametrize(
    "class_name, what",
    [
        ("TFSMLayer", "runs a TensorFlow SavedModel"),
        ("TorchModuleWrapper", "holds a pickled PyTorch module"),
        ("JaxLayer", "holds JAX code"),
        ("DenseFeatures", "runs TensorFlow feature columns"),
    ],
)
def test_layers_carrying_code_or_other_frameworks_are_refused_with_the_fix(tmp_path, class_name, what):
    def edit(config):
        layer = config["config"]["layers"][1]
        layer["class_name"] = class_name
        layer["config"] = {"name": layer["config"]["name"]}

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(UnsupportedLayerError, match=rf"\({class_name}\) {what}.*never executes code.*custom_layers"):
        tlp.load_keras(path)


def test_several_bad_layers_are_listed_in_one_error(tmp_path):
    def edit(config):
        find_layer(config, "Dense")["class_name"] = "FancyA"
        find_layer(config, "Activation")["class_name"] = "FancyB"

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(UnsupportedLayerError, match=r"(?s)2 layers cannot be converted.*FancyA.*FancyB"):
        tlp.load_keras(path)


def test_unknown_config_key_is_refused(tmp_path):
    def edit(config):
        find_layer(config, "LSTM")["config"]["peephole_connections"] = True

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(
        UnsupportedOptionError, match=r"layer 'lstm' \(LSTM\).*'peephole_connections'.*Received.*True.*Expected keys"
    ):
        tlp.load_keras(path)


def test_unknown_activation_is_refused(tmp_path):
    def edit(config):
        find_layer(config, "LSTM")["config"]["activation"] = "my_custom_act"

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(UnsupportedOptionError, match=r"'activation' is 'my_custom_act'.*Supported:"):
        tlp.load_keras(path)


@pytest.mark.parametrize("key,value", [("lora_rank", 4), ("quantization_config", {"mode": "int8"})])
def test_quantized_or_lora_dense_is_refused(tmp_path, key, value):
    def edit(config):
        find_layer(config, "Dense")["config"][key] = value

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(UnsupportedOptionError, match=rf"'{key}'"):
        tlp.load_keras(path)


def test_stateful_without_batch_size_is_refused(tmp_path):
    def edit(config):
        layer = find_layer(config, "LSTM")
        layer["config"]["stateful"] = True
        for entry in layers_of(config):
            entry["config"].pop("batch_input_shape", None)
            entry["config"].pop("batch_shape", None)

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(UnsupportedOptionError, match="stateful but the file fixes no batch size"):
        tlp.load_keras(path)


# ---------------------------------------------------------------- bad files
def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        tlp.load_keras("nope.h5")


def test_not_a_keras_file(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(KerasFileError, match=r"image\.png: not a Keras model file.*Expected a \.keras zip"):
        tlp.load_keras(path)


def test_hdf5_without_model_config(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(KerasFileError, match=r"data\.h5: HDF5 file without a 'model_config'"):
        tlp.load_keras(path)


@pytest.mark.parametrize("src", [H5, ZIP], ids=["h5", "keras"])
def test_truncated_file(tmp_path, src):
    data = src.read_bytes()
    path = tmp_path / f"cut{src.suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(KerasFileError, match=r"cut\.(h5|keras).*(truncated|damaged)"):
        tlp.load_keras(path)


def test_zip_without_config(tmp_path):
    path = rewrite_zip(ZIP, tmp_path / "m.keras", drop=("config.json",))
    with pytest.raises(KerasFileError, match=r"m\.keras: the \.keras archive has no 'config\.json'"):
        tlp.load_keras(path)


def test_keras_zip_config_without_weights(tmp_path):
    path = rewrite_zip(ZIP, tmp_path / "m.keras", drop=("model.weights.h5",))
    with pytest.raises(KerasFileError, match="holds a config but no weights"):
        tlp.load_keras(path)


def _h5_to_npz(src: Path, dst: Path, pickled_object=None) -> Path:
    """Rewrites a .keras archive's h5 weights in the npz layout: one pickled dict per object."""
    with zipfile.ZipFile(src) as zin:
        blob = zin.read("model.weights.h5")
    store: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(io.BytesIO(blob), "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and name.endswith("vars") and len(obj):
                store[name[: -len("/vars")] if name != "vars" else "__root__"] = {k: obj[k][()] for k in obj}

        f.visititems(visit)
    members = {}
    for key, value in store.items():
        arr = np.empty((), dtype=object)
        arr[()] = value if pickled_object is None else pickled_object
        members[key] = arr
    buf = io.BytesIO()
    np.savez(buf, **members)
    rewrite_zip(src, dst, drop=("model.weights.h5",))
    with zipfile.ZipFile(dst, "a") as z:
        z.writestr("model.weights.npz", buf.getvalue())
    return dst


def test_keras_zip_npz_weights_load_as_plain_arrays(tmp_path):
    path = _h5_to_npz(ZIP, tmp_path / "m.keras")
    x = np.arange(12).reshape(2, 6) % 20
    with torch.inference_mode():
        assert torch.equal(tlp.load_keras(path)(x), tlp.load_keras(ZIP)(x))


def test_keras_zip_npz_with_pickled_objects_is_refused(tmp_path):
    path = _h5_to_npz(ZIP, tmp_path / "m.keras", pickled_object=Path("not an array"))
    with pytest.raises(KerasFileError, match=r"cannot be read safely.*refusing to load pathlib"):
        tlp.load_keras(path)


def test_h5_config_without_weights(tmp_path):
    path = tmp_path / "m.h5"
    shutil.copy(H5, path)
    with h5py.File(path, "r+") as f:
        del f["model_weights"]
    with pytest.raises(KerasFileError, match="no 'model_weights' group"):
        tlp.load_keras(path)


def test_json_without_weights(tmp_path):
    with h5py.File(H5) as f:
        (tmp_path / "arch.json").write_text(f.attrs["model_config"])
    with pytest.raises(KerasFileError, match=r"JSON architecture has no weights.*weights="):
        tlp.load_keras(tmp_path / "arch.json")


def test_weights_only_file_given_as_model(tmp_path):
    path = tmp_path / "w.h5"
    shutil.copy(H5, path)
    with h5py.File(path, "r+") as f:
        del f.attrs["model_config"]
        f.attrs["layer_names"] = f["model_weights"].attrs["layer_names"]
    with pytest.raises(KerasFileError, match=r"weights only.*load_keras\('model.json', weights="):
        tlp.load_keras(path)


def test_weights_of_another_architecture_name_both_shapes(tmp_path):
    # The architecture of the u16 stacked model, the weights of the same model with other units.
    def edit(config):
        find_layer(config, "LSTM")["config"]["units"] = 8

    path = rewrite_h5_config(H5_STACKED, tmp_path / "m.h5", edit)
    with pytest.raises(
        WeightMismatchError, match=r"layer 'lstm' \(LSTM\): weight 'kernel' has shape \(5, 64\)\. Expected \(5, 32\)"
    ):
        tlp.load_keras(path)


def test_missing_weights_for_a_layer(tmp_path):
    path = tmp_path / "m.h5"
    shutil.copy(H5, path)
    with h5py.File(path, "r+") as f:
        del f["model_weights/lstm"]
    with pytest.raises(WeightMismatchError, match=r"layer 'lstm' \(LSTM\): the file has no weights"):
        tlp.load_keras(path)


def test_subclassed_model_config_is_refused(tmp_path):
    def edit(config):
        config["class_name"] = "MyModel"

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.raises(KerasFileError, match="class 'MyModel'.*Subclassed models"):
        tlp.load_keras(path)


# ---------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def classifier():
    return tlp.load_keras(H5)


@pytest.fixture(scope="module")
def float_model():
    return tlp.load_keras(H5_STACKED)


def test_wrong_rank(float_model):
    with pytest.raises(InputError, match=r"Input 'input' .*expects shape \(None, 7, 5\).*Received shape \(3, 5\)"):
        float_model(np.zeros((3, 5), np.float32))


def test_wrong_feature_size(float_model):
    with pytest.raises(InputError, match=r"expects shape \(None, 7, 5\).*Received shape \(3, 7, 4\)"):
        float_model(np.zeros((3, 7, 4), np.float32))


def test_wrong_feature_size_at_layer_names_the_layer():
    model = tlp.load_keras(H5_STACKED)
    with pytest.raises(InputError, match=r"layer 'lstm' \(LSTM\) expects .* 5 features.*Received shape \(2, 7, 4\)"):
        model.layer("lstm")(torch.zeros(2, 7, 4))


@pytest.mark.parametrize(
    "value,match",
    [
        (np.zeros((2, 7, 5), np.complex64), "must be (numeric|real)"),
        (np.zeros((2, 7, 5), bool), "must be real numbers"),
        (np.array([["a"] * 5] * 7), "must be numeric"),
    ],
)
def test_wrong_dtype(float_model, value, match):
    with pytest.raises(InputError, match=match):
        float_model(value)


def test_token_out_of_range_names_layer_and_range(classifier):
    with pytest.raises(
        InputError, match=r"layer 'embedding' \(Embedding\) has input_dim 20.*\[0, 19\].*Received indices from 0 to 25"
    ):
        classifier(np.array([[0, 1, 2, 3, 4, 25]]))


def test_non_integral_float_tokens(classifier):
    """Keras casts float ids to int32 (truncation toward zero); NaN has no index."""
    with torch.inference_mode():
        assert torch.equal(classifier(np.full((1, 6), 1.5, np.float32)), classifier(np.full((1, 6), 1, np.int64)))
    with pytest.raises(InputError, match="NaN or infinite"):
        classifier(np.full((1, 6), np.nan, np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.float32])
def test_any_integer_dtype_is_accepted(classifier, dtype):
    x = np.arange(12).reshape(2, 6) % 20
    with torch.inference_mode():
        ref = classifier(x.astype(np.int64))
        got = classifier(x.astype(dtype))
    assert torch.equal(ref, got)


def test_wrong_number_of_inputs(float_model):
    with pytest.raises(InputError, match=r"takes 1 input\(s\) \['input'\].*Received 2"):
        float_model(np.zeros((1, 7, 5), np.float32), np.zeros((1, 7, 5), np.float32))


def test_wrong_input_name(float_model):
    with pytest.raises(InputError, match=r"unknown \['x'\]"):
        float_model({"x": np.zeros((1, 7, 5), np.float32)})


def test_probe_unknown_key(float_model):
    with pytest.raises(ProbeKeyError, match=r"'nope' names no layer.*Layers: lstm"):
        tlp.probe(float_model, np.zeros((1, 7, 5), np.float32), layers=["nope"])


def test_probe_accepts_a_python_list_for_a_single_input(classifier):
    tokens = [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]]
    acts = tlp.probe(classifier, tokens, layers=["lstm"])
    with torch.inference_mode():
        expected = tlp.probe(classifier, np.array(tokens), layers=["lstm"])["lstm"]
    assert torch.equal(acts["lstm"], expected)


def test_a_one_element_list_is_the_single_input(float_model):
    x = np.random.default_rng(0).standard_normal((2, 7, 5)).astype(np.float32)
    with torch.inference_mode():
        assert torch.equal(float_model([x]), float_model(x))
        assert torch.equal(tlp.probe(float_model, [torch.from_numpy(x)])["lstm"], tlp.probe(float_model, x)["lstm"])


def test_reduced_precision_policy_is_announced(tmp_path):
    def edit(config):
        find_layer(config, "LSTM")["config"]["dtype"] = "mixed_float16"

    path = rewrite_h5_config(H5, tmp_path / "m.h5", edit)
    with pytest.warns(UserWarning, match=r"layers lstm \(mixed_float16\) compute in reduced precision"):
        tlp.load_keras(path)
