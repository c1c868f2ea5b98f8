"""Typed errors at load and run time: the graph checked when a model is built (references, cycles, declared
shapes that must compose), layers that fail in forward named in an InputError, empty batches and empty
sequences, and conversion errors of mixed kinds combined into one error that keeps every kind."""

from __future__ import annotations

import json
import pickle
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_lstm_probe.converters import registry

import torch_lstm_probe as tlp
from torch_lstm_probe.errors import (
    MAX_MESSAGE_CHARS,
    GraphError,
    InputError,
    KerasFileError,
    MultipleErrors,
    TorchLstmProbeError,
    UnsupportedLayerError,
    WeightMismatchError,
    combine_errors,
)
from torch_lstm_probe.model import KerasModel

GOLDENS = Path(__file__).resolve().parent / "goldens"
LSTM = GOLDENS / "keras_lstm_default_u3.keras"  # Sequential: input (None, 7, 5) -> LSTM(3)
STACKED = GOLDENS / "keras_lstm_u16_stacked.keras"


def _edit_keras(src: Path, dst: Path, edit) -> Path:
    """Copies a .keras archive with its config.json changed by ``edit(config)``."""
    with zipfile.ZipFile(src) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


def _set_input_shape(shape):
    def edit(config):
        config["config"]["layers"][0]["config"]["batch_shape"] = shape

    return edit


# ---------------------------------------------------------------------------------------- shapes
def test_declared_shapes_that_do_not_compose_fail_at_load(tmp_path):
    path = _edit_keras(LSTM, tmp_path / "m.keras", _set_input_shape([None, 7, 6]))
    with pytest.raises(
        GraphError,
        match=r"m\.keras: Model 'lstm_default_u3': its layers do not fit together .*"
        r"\(None, 7, 6\).*layer 'lstm' \(LSTM\).*5 features",
    ):
        tlp.load_keras(path)


def test_free_axes_load_and_a_misfit_input_names_the_layer_at_forward(tmp_path):
    path = _edit_keras(LSTM, tmp_path / "m.keras", _set_input_shape([None, None, None]))
    model = tlp.load_keras(path)  # Keras accepts the graph: other feature sizes may fit
    assert model(torch.zeros(2, 4, 5)).shape == (2, 3)
    with pytest.raises(InputError, match=r"layer 'lstm' \(LSTM\) expects .*5 features.*Received shape \(2, 4, 6\)"):
        model(torch.zeros(2, 4, 6))


def test_a_sequence_of_zero_steps_is_an_input_error(tmp_path):
    path = _edit_keras(LSTM, tmp_path / "m.keras", _set_input_shape([None, None, 5]))
    model = tlp.load_keras(path)
    with pytest.raises(InputError, match=r"Input 'input' .* size 0 on axis 1 .*at least one step"):
        model(torch.zeros(2, 0, 5))


class _NeedsTwoSteps(torch.nn.Module):
    """A custom layer with no input checks of its own: torch fails inside it on a 1-step input."""

    def forward(self, x):
        return x[:, :2].reshape(x.shape[0], 2 * x.shape[2])[:, :3]


def test_a_torch_failure_inside_a_layer_becomes_an_input_error_naming_it(tmp_path):
    path = _edit_keras(LSTM, tmp_path / "m.keras", _set_input_shape([None, None, 5]))
    model = tlp.load_keras(path, custom_layers={"LSTM": lambda config, weights: _NeedsTwoSteps()})
    assert model(torch.zeros(2, 4, 5)).shape == (2, 3)
    with pytest.raises(
        InputError,
        match=r"Model 'lstm_default_u3': layer 'lstm' \(_NeedsTwoSteps\) cannot run on "
        r"input\(s\) of shape \(2, 1, 5\) \(RuntimeError: .*\)\. Fix: feed inputs of the shapes in "
        r"model.input_specs",
    ) as info:
        model(torch.zeros(2, 1, 5))
    assert isinstance(info.value.__cause__, RuntimeError)


GOLDEN_MODELS = sorted(p.name for p in GOLDENS.glob("*.keras") if "time_major" not in p.name)


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_a_batch_of_zero_rows_gives_empty_outputs(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tlp.load_keras(GOLDENS / name)
    specs = model.input_specs

    def inputs(batch):
        xs = []
        for spec in specs:
            shape = [batch] + [3 if d is None else d for d in spec["shape"][1:]]
            xs.append(torch.zeros(shape, dtype=torch.float32 if spec["dtype"].startswith("float") else torch.long))
        return xs

    full, empty = model(*inputs(2)), model(*inputs(0))
    full, empty = (full, empty) if isinstance(full, list) else ([full], [empty])
    assert [tuple(e.shape) for e in empty] == [(0, *f.shape[1:]) for f in full]


def test_zero_steps_on_a_time_major_input_is_an_input_error_naming_the_layer():
    model = tlp.load_keras(GOLDENS / "tf_keras_lstm_time_major.keras")  # input (7, 3, 5): time first
    assert model(torch.zeros(7, 3, 5)).shape[0] == 3  # the last output of each of 3 sequences
    with pytest.raises(InputError, match=r"layer 'lstm' \(LSTM\) cannot run on input\(s\) of shape \(0, 3, 5\)"):
        model(torch.zeros(0, 3, 5))


def test_huge_declared_sizes_neither_allocate_nor_stall_the_load(tmp_path):
    path = _edit_keras(LSTM, tmp_path / "m.keras", _set_input_shape([None, 10**6, 5]))
    start = time.perf_counter()
    model = tlp.load_keras(path)  # an LSTM steps through time even for an empty batch: not run that far
    assert time.perf_counter() - start < 5
    assert model.input_specs[0]["shape"] == [None, 10**6, 5]
    repeat = _config(
        layers=[
            {"name": "r", "type": "RepeatVector", "config": {"n": 10**12}},
            {"name": "a", "type": "Activation", "config": {"activation": "relu"}},
        ],
        nodes=[{"layer": "r", "inputs": [["x", 0, 0]]}, {"layer": "a", "inputs": [["r", 0, 0]]}],
    )
    start = time.perf_counter()
    KerasModel(repeat)
    assert time.perf_counter() - start < 5


def test_the_load_time_run_leaves_modes_and_state_as_built():
    config = {
        "name": "m",
        "inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
        "layers": [{"name": "d", "type": "Dropout", "config": {"rate": 0.5}}],
        "nodes": [{"layer": "d", "inputs": [["x", 0, 0]]}],
        "outputs": [["d", 0, 0]],
    }
    model = KerasModel(config)
    assert model.training and model.layer("d").training


# ---------------------------------------------------------------------------------------- graph configs
def _config(**changes):
    config = {
        "name": "m",
        "inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
        "layers": [{"name": "a", "type": "Activation", "config": {"activation": "relu"}}],
        "nodes": [{"layer": "a", "inputs": [["x", 0, 0]]}],
        "outputs": [["a", 0, 0]],
    }
    config.update(changes)
    return config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inputs": None}, r"config key 'inputs' is None\. Expected a list"),
        ({"inputs": [{"name": "x", "shape": [None, -4], "dtype": "float32"}]}, r"malformed input .*-4"),
        ({"inputs": [{"name": 3, "shape": None}]}, r"malformed input"),
        ({"inputs": [{"name": "x", "shape": [None, 10**30], "dtype": "float32"}]}, r"malformed input .*size in 0\.\."),
        ({"inputs": [{"name": "x", "shape": [None, 2**31 - 1, 2**31 - 1, 2**31 - 1]}]}, r"more than 2\*\*62 elements"),
        ({"layers": [{"type": "Activation", "config": {}}]}, r"malformed layer entry"),
        ({"nodes": [{"inputs": [["x", 0, 0]]}]}, r"malformed node"),
        ({"nodes": [{"layer": "a", "inputs": [["x", "0", 0]]}]}, r"Malformed tensor reference \['x', '0', 0\]"),
        ({"nodes": [{"layer": "a", "inputs": [["y", 0, 0]]}]}, r"reads tensor \['y', 0, 0\], which no input"),
        ({"nodes": [{"layer": "a", "inputs": [["a", 0, 0]]}]}, r"cycle through layer 'a'"),
        ({"outputs": [["x", 1, 0]]}, r"output \['x', 1, 0\] is produced by no layer call"),
        ({"outputs": [["a", 0, 2]]}, r"its layers do not fit together.*output\(s\) \[\['a', 0, 2\]\] are not produced"),
    ],
)
def test_malformed_graph_configs_raise_graph_errors(changes, message):
    with pytest.raises(GraphError, match=message):
        KerasModel(_config(**changes))


def test_a_nested_model_without_inputs_is_a_graph_error():
    inner = {"name": "inner", "inputs": [], "layers": [], "nodes": [], "outputs": []}
    config = _config(
        layers=[{"name": "inner", "type": "Model", "config": inner}],
        nodes=[{"layer": "inner", "inputs": [["x", 0, 0]]}],
        outputs=[["inner", 0, 0]],
    )
    with pytest.raises(GraphError, match=r"do not fit together.*Model 'inner' takes 0 input"):
        KerasModel(config)


def test_a_graph_deeper_than_the_recursion_limit_builds_and_runs():
    depth = 3000
    layers = [{"name": f"a{k}", "type": "Activation", "config": {"activation": "relu"}} for k in range(depth)]
    nodes = [{"layer": f"a{k}", "inputs": [[f"a{k - 1}" if k else "x", 0, 0]]} for k in reversed(range(depth))]
    model = KerasModel(_config(layers=layers, nodes=nodes, outputs=[[f"a{depth - 1}", 0, 0]]))
    assert torch.equal(model(torch.tensor([[-1.0, 2.0, 0.0, 3.0]])), torch.tensor([[0.0, 2.0, 0.0, 3.0]]))


# ---------------------------------------------------------------------------------------- conversion errors
def _two_bad_layers(tmp_path):
    """The stacked LSTM golden with one unknown class and one LSTM whose units do not fit its weights."""

    def edit(config):
        layers = config["config"]["layers"]
        lstms = [layer for layer in layers if layer["class_name"] == "LSTM"]
        lstms[0]["class_name"] = "FancyRNN"
        lstms[1]["config"]["units"] += 1

    return _edit_keras(STACKED, tmp_path / "m.keras", edit)


@pytest.mark.parametrize("kind", [UnsupportedLayerError, WeightMismatchError, ValueError, TorchLstmProbeError])
def test_mixed_conversion_errors_are_caught_by_every_kind_they_hold(tmp_path, kind):
    with pytest.raises(kind, match=r"(?s)2 layers cannot be converted:.*FancyRNN.*weight 'kernel' has shape"):
        tlp.load_keras(_two_bad_layers(tmp_path))


def test_mixed_conversion_errors_keep_each_error_and_survive_pickling(tmp_path):
    with pytest.raises(MultipleErrors) as info:
        tlp.load_keras(_two_bad_layers(tmp_path))
    err = info.value
    assert [type(e) for e in err.errors] == [UnsupportedLayerError, WeightMismatchError]
    assert type(err).__name__ == "UnsupportedLayerError+WeightMismatchError"
    assert not isinstance(err, GraphError)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err) and str(again) == str(err) and len(again.errors) == 2


def test_combine_errors_flattens_and_keeps_a_single_error_as_is():
    single = KerasFileError("one")
    assert combine_errors([single], "h") is single
    inner = combine_errors([KerasFileError("a"), GraphError("b")], "inner:")
    outer = combine_errors([inner, KerasFileError("c")], "outer:")
    assert [str(e) for e in outer.errors] == ["a", "b", "c"]
    assert str(outer).count(":") == 1  # one header: nesting does not repeat them
    assert isinstance(outer, KerasFileError) and isinstance(outer, GraphError)


def test_long_messages_are_shortened_in_the_middle():
    err = KerasFileError("head " + "x" * 100_000 + " tail")
    text = str(err)
    assert len(text) < MAX_MESSAGE_CHARS + 100 and text.startswith("head ") and text.endswith(" tail")
    assert "characters left out" in text


def test_a_converter_that_cannot_read_a_config_value_gives_a_typed_error(monkeypatch):
    def broken(layer, ctx):
        raise TypeError("int() argument must be a string, a bytes-like object or a real number, not 'NoneType'")

    monkeypatch.setitem(registry.CONVERTERS, "LSTM", broken)
    with pytest.raises(
        KerasFileError,
        match=r"keras_lstm_default_u3\.keras: layer 'lstm' \(LSTM\): the layer config "
        r"cannot be read \(TypeError: int\(\) argument.*Fix: re-save",
    ) as info:
        tlp.load_keras(LSTM)
    assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.parametrize("units", ["abc", None, -1, 0, 2**40, 2.5, [3], True])
def test_a_size_of_the_wrong_type_or_range_is_a_file_error_naming_the_key(tmp_path, units):
    def edit(config):
        config["config"]["layers"][1]["config"]["units"] = units

    path = _edit_keras(LSTM, tmp_path / "m.keras", edit)
    with pytest.raises(
        KerasFileError, match=r"layer 'lstm' \(LSTM\): config key 'units' is .*Expected an integer in 1\.\."
    ):
        tlp.load_keras(path)


def test_a_recurrent_kernel_without_input_rows_is_a_weight_mismatch(tmp_path):
    import h5py

    with zipfile.ZipFile(LSTM) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    weights = tmp_path / "model.weights.h5"
    weights.write_bytes(members["model.weights.h5"])
    with h5py.File(weights, "r+") as f:
        del f["layers/lstm/cell/vars/0"]
        f.create_dataset("layers/lstm/cell/vars/0", data=np.zeros((0, 12), np.float32))
    members["model.weights.h5"] = weights.read_bytes()
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(
        WeightMismatchError,
        match=r"layer 'lstm' \(LSTM\): weight 'kernel' has shape \(0, 12\)\. "
        r"Expected \(input features >= 1, 12\)",
    ):
        tlp.load_keras(path)


def test_an_integral_float_size_is_that_size(tmp_path):
    def edit(config):
        config["config"]["layers"][1]["config"]["units"] = 3.0

    assert tlp.load_keras(_edit_keras(LSTM, tmp_path / "m.keras", edit))(torch.zeros(1, 7, 5)).shape == (1, 3)


def test_a_custom_converter_that_fails_keeps_its_own_exception():
    def mine(config, weights):
        raise TypeError("my converter is broken")

    with pytest.raises(TypeError, match="my converter is broken"):
        tlp.load_keras(LSTM, custom_layers={"LSTM": mine})


# ---------------------------------------------------------------------------------------- tlp.load
def _resave(src: Path, dst: Path, edit_config=None, edit_tensors=None, raw_config=None) -> Path:
    """A copy of a tlp.save file with its config (a dict) or its tensors changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from torch_lstm_probe.io import CONFIG_KEY

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta[CONFIG_KEY])
    if edit_config is not None:
        edit_config(config)
    if edit_tensors is not None:
        edit_tensors(tensors)
    meta[CONFIG_KEY] = raw_config if raw_config is not None else json.dumps(config)
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "saved.safetensors"
    tlp.save(tlp.load_keras(LSTM), path)
    return path


def test_a_saved_model_loads_again(saved):
    assert tlp.load(saved)(torch.zeros(1, 7, 5)).shape == (1, 3)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"raw_config": "{not json"},
            KerasFileError,
            r"saved\.safetensors: the model config in the metadata is not valid JSON",
        ),
        ({"raw_config": "[" * 100_000}, KerasFileError, r"not valid JSON"),
        ({"edit_config": lambda c: c.update(layers=7)}, GraphError, r"saved\.safetensors: Model .*'layers' is 7"),
        (
            {"edit_config": lambda c: c["layers"][0].update(type="NoSuchModule")},
            KerasFileError,
            r"config in the metadata cannot be built \(ValueError: Unknown runtime module type 'NoSuchModule'",
        ),
        (
            {"edit_config": lambda c: c["layers"][0]["config"].update(hidden_size="abc")},
            KerasFileError,
            r"cannot be built \(\w+Error",
        ),
        (
            {"edit_tensors": lambda t: t.popitem()},
            WeightMismatchError,
            r"tensors do not fit the model config\. Missing: \['",
        ),
        (
            {"edit_tensors": lambda t: t.update({k: torch.zeros(1) for k in list(t)[:1]})},
            WeightMismatchError,
            r"wrong shapes: \['lstm\.\w+: \(1,\) \(expected \(\d+",
        ),
        (  # 16 TB of weights if it were built: refused from the shapes alone
            {"edit_config": lambda c: c["layers"][0]["config"].update(hidden_size=10**6)},
            WeightMismatchError,
            r"wrong shapes: \['lstm\.bias_hh_l0: \(12,\) \(expected \(4000000,\)\)",
        ),
        (  # unsaved state buffers of 10**9 rows: refused before anything is allocated
            {"edit_config": lambda c: c["layers"][0]["config"].update(stateful=True, batch_size=10**9)},
            KerasFileError,
            r"asks for \d+ parameter and buffer elements, but the file holds \d+",
        ),
    ],
)
def test_a_damaged_saved_model_raises_typed_errors(saved, tmp_path, change, error, message):
    damaged = _resave(saved, tmp_path / "damaged.safetensors", **change)
    with pytest.raises(error, match=message.replace("saved\\.", "damaged\\.")):
        tlp.load(damaged)


def test_the_size_check_of_tlp_load_costs_no_compiler_import(saved):
    import subprocess
    import sys

    code = (
        "import sys, time, torch_lstm_probe as tlp; start = time.perf_counter(); "
        f"tlp.load({str(saved)!r}); print(time.perf_counter() - start, 'torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False" and float(out[0]) < 1.0, out  # meta initializers skipped: no torch._dynamo import


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_tlp_load_reads_only_regular_files(tmp_path, kind):
    import os

    path = tmp_path / "model.safetensors"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()  # a FIFO would block the read forever
    with pytest.raises(KerasFileError, match=r"model\.safetensors: not a regular file"):
        tlp.load(path)
