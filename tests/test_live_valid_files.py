"""Valid Keras files that must load and match Keras on every layer: nested models in Keras 3 and
tf_keras, TimeDistributed around a nested model, custom converters inside wrappers, float token
ids for Embedding, the implicit input layer of old Sequential configs, Keras 2.11-2.12 ``.keras``
archives (``variables.h5``) and TFOpLambda nodes refused as code."""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Sequence

import h5py
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


def keras_calls(
    klib, model, inputs: Sequence[np.ndarray], extra: Sequence[Any] = ()
) -> tuple[dict[str, list[list[np.ndarray]]], list[np.ndarray]]:
    """Keras' outputs of every call of every layer, nested models' layers included, and the
    values of the ``extra`` tensors of ``model`` (e.g. its outputs), in one run per model.

    Returns ``{path: [outputs of call 0, outputs of call 1, ...]}`` with paths as
    ``model.iter_layers()`` names them (``outer/inner``), calls in graph order; then the extras.
    The calls of a nested model are run once, stacked along the batch axis.
    """
    graph = getattr(model, "_functional", None) or model
    every = graph.operations if library_name(klib) == "keras" else model.layers  # Keras 3: op nodes too
    layers = [layer for layer in every if layer.__class__.__name__ != "InputLayer"]
    wanted: list[tuple[Any, str, list[Any]]] = [(None, "extra", list(extra))]  # (layer, "out"/"in", tensors)
    for layer in layers:
        for node in _own_calls(klib, model, layer):
            wanted.append((layer, "out", _tensors(node.output_tensors)))
            if hasattr(layer, "layers") and layer.__class__.__name__ in ("Sequential", "Functional", "Model"):
                wanted.append((layer, "in", _tensors(node.input_tensors)))
    flat = [t for *_, ts in wanted for t in ts]
    values = klib.Model(model.inputs, flat)(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    values = [np.asarray(v) for v in _tensors(values)]
    result: dict[str, list[list[np.ndarray]]] = {}
    nested: dict[str, tuple[Any, list[list[np.ndarray]]]] = {}
    position, extras = 0, []
    for layer, kind, ts in wanted:
        got, position = values[position : position + len(ts)], position + len(ts)
        if kind == "extra":
            extras = got
        elif kind == "out":
            result.setdefault(layer.name, []).append(got)
        else:
            nested.setdefault(layer.name, (layer, []))[1].append(got)
    for name, (layer, calls) in nested.items():
        sizes = [len(call[0]) for call in calls]
        stacked = [np.concatenate(parts) for parts in zip(*calls)]  # the calls along the batch axis
        inner, _ = keras_calls(klib, layer, stacked)
        splits = np.cumsum(sizes)[:-1]
        for path, inner_calls in inner.items():
            per_outer = [[np.split(out, splits) for out in outputs] for outputs in inner_calls]
            for k in range(len(calls)):  # execution order: outer call k runs every inner call
                result.setdefault(f"{name}/{path}", []).extend(
                    [[pieces[k] for pieces in outputs] for outputs in per_outer]
                )
    return result, extras


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
    calls, y = keras_calls(klib, keras_model, inputs, extra=_tensors(keras_model.outputs))
    expected = probe_keys(calls)
    acts = tlp.probe(converted, list(inputs) if len(inputs) > 1 else inputs[0])
    assert sorted(expected) == sorted(acts), f"probe keys {sorted(acts)} != Keras calls {sorted(expected)}"
    for key, value in expected.items():
        assert_close(acts[key], value, ATOL["cpu_float32"], f"layer {key}")
    with torch.inference_mode():
        got = _tensors(converted(*inputs))
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


def nested_model(klib):
    """Every nesting Keras numbers differently, in one graph:

    * ``mid``: a Functional holding a Functional (``inner``), called once;
    * ``block``: one Functional called twice, both calls read by later layers and returned;
    * ``with_input`` / ``without_input``: Sequential models with and without an input layer,
      ``with_input`` called twice.
    """
    L = klib.layers
    inner = _block(klib, "inner")
    mid_in = klib.Input((STEPS, FEATURES))
    mid = klib.Model(mid_in, L.Dense(FEATURES, name="mid_dense")(inner(mid_in)), name="mid")
    block = _block(klib)
    with_input = klib.Sequential(
        [
            klib.Input((STEPS, FEATURES)),
            L.Dense(4, name="s_dense"),
            L.LSTM(FEATURES, return_sequences=True, name="s_lstm"),
        ],
        name="with_input",
    )
    without_input = klib.Sequential([L.Dense(FEATURES, activation="relu", name="t_dense")], name="without_input")
    x = klib.Input((STEPS, FEATURES), name="x")
    first = block(mid(x))
    second = block(first)
    merged = L.Add(name="add")([first, second])
    a = with_input(without_input(merged))
    b = with_input(a)
    return klib.Model(x, [second, L.LSTM(2, name="head")(b), first, a], name="outer")


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_nested_models_match_keras_on_every_call(klib, tmp_path, fmt):
    seed(klib)
    model = nested_model(klib)
    randomize_biases(model, np.random.default_rng(0))
    converted = tlp.load_keras(save(model, tmp_path, fmt))
    acts = assert_every_call_matches(klib, model, converted, [_x()])
    assert {"block@0", "block@1", "block/block_lstm@1", "mid/inner/inner_lstm", "with_input/s_lstm@1"} <= set(acts)


# ---------------------------------------------------------------------------- TimeDistributed(model)


def td_model(klib):
    """TimeDistributed around a Sequential (with an LSTM over a per-step axis) and a Functional."""
    L = klib.layers
    per_step = klib.Sequential(
        [
            klib.Input((4, FEATURES)),
            L.LSTM(5, name="step_lstm"),
            L.Dense(FEATURES, activation="tanh", name="step_dense"),
        ],
        name="per_step",
    )
    inp = klib.Input((FEATURES,))
    a = L.Dense(4, activation="relu", name="fa")(inp)
    b = L.Dense(4, name="fb")(inp)
    per_vector = klib.Model(inp, L.Dense(2, name="fc")(L.Add(name="fadd")([a, b])), name="per_vector")
    x = klib.Input((STEPS, 4, FEATURES), name="x")
    y = L.TimeDistributed(per_step, name="td_seq")(x)
    y = L.TimeDistributed(per_vector, name="td_func")(y)
    return klib.Model(x, L.LSTM(3, return_sequences=True, name="top")(y), name="outer")


def _td_x() -> np.ndarray:
    return np.random.default_rng(2).standard_normal((2, STEPS, 4, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_time_distributed_model_matches_keras(klib, tmp_path, fmt):
    seed(klib)
    model = td_model(klib)
    randomize_biases(model, np.random.default_rng(0))
    converted = tlp.load_keras(save(model, tmp_path, fmt))
    assert_every_call_matches(klib, model, converted, [_td_x()])
    inner = converted.layer("td_seq").layer
    assert isinstance(inner, tlp.KerasModel) and inner.layer_names == ["step_lstm", "step_dense"]
    tlp.save(converted, tmp_path / "m.safetensors")
    assert_every_call_matches(klib, model, tlp.load(tmp_path / "m.safetensors"), [_td_x()])


def test_time_distributed_model_in_memory(klib):
    seed(klib)
    model = td_model(klib)
    randomize_biases(model, np.random.default_rng(0))
    assert_every_call_matches(klib, model, tlp.load_keras(model), [_td_x()])


# ---------------------------------------------------------------------------- Embedding: float and negative ids

# Float ids as Keras casts them (toward zero): 0.5 and -0.5 read row 0; mask_zero looks at the value
# the Embedding receives (0.5 unmasked for a float Input, masked for an int Input, which casts first).
FLOAT_IDS = np.array([[1.7, 0.5, 2.5, -0.5, 0.0, 4.2], [3.99, 0.0, 0.2, 5.5, 1.0, -0.9]], np.float32)


def _embedding_model(klib, dtype: str):
    L = klib.layers
    inp = klib.Input((6,), dtype=dtype, name="ids")
    y = L.Embedding(6, 3, mask_zero=True, name="emb")(inp)
    return klib.Model(inp, L.LSTM(2, return_sequences=True, name="lstm")(y), name="tokens")


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_embedding_float_ids_are_truncated_like_keras(klib, tmp_path, dtype):
    seed(klib)
    model = _embedding_model(klib, dtype)
    randomize_biases(model, np.random.default_rng(0))
    converted = tlp.load_keras(save(model, tmp_path, "h5" if dtype == "int32" else "keras"))
    assert_every_call_matches(klib, model, converted, [FLOAT_IDS])
    assert_every_call_matches(klib, model, converted, [FLOAT_IDS.astype(np.float64)])


def test_embedding_negative_ids_follow_the_generation(klib, tmp_path):
    """Keras 3 reads id -k as row input_dim - k (ops.take); tf_keras refuses negative ids."""
    seed(klib)
    model = _embedding_model(klib, "int32")
    converted = tlp.load_keras(save(model, tmp_path, "keras"))
    ids = np.array([[1, -1, 2, -6, 0, 3]], np.int32)
    if library_name(klib) == "keras":
        assert_every_call_matches(klib, model, converted, [ids])
    else:
        with pytest.raises(Exception, match="not in"):
            model(ids)
        with pytest.raises(tlp.InputError, match=r"layer 'emb' \(Embedding\) has input_dim 6.*\[0, 5\].*from -6 to 3"):
            converted(ids)
    with pytest.raises(Exception, match="not in"):
        model(np.array([[6, 1, 1, 1, 1, 1]], np.int32))
    with pytest.raises(tlp.InputError, match="has input_dim 6"):
        converted(np.array([[6, 1, 1, 1, 1, 1]], np.int32))


# ---------------------------------------------------------------------------- Keras <= 2.2: implicit input layers

LEGACY = Path(__file__).parent / "goldens" / "legacy"


@pytest.mark.parametrize(
    "case, name",
    [
        ("keras1_lstm_masked", "embedding_1_input"),
        ("keras2_0_8_lstm_implicit_defaults", "lstm_1_input"),
        ("keras2_1_6_lstm", "lstm_1_input"),
        ("keras2_2_4_lstm", "lstm_1_input"),
    ],
)
def test_implicit_input_layer_is_named_as_keras_names_it(case, name):
    """Keras <= 2.2 Sequential configs hold no InputLayer: Keras creates `<first layer>_input`."""
    with h5py.File(LEGACY / f"{case}.h5", "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]
    layers = layers["layers"] if isinstance(layers, dict) else layers
    assert all(entry["class_name"] != "InputLayer" for entry in layers)
    model = tlp.load_keras(LEGACY / f"{case}.h5")
    assert model.input_names == [name]
    x = np.zeros((1, *model.input_specs[0]["shape"][1:]), np.float32)
    assert tlp.probe(model, {name: x}).keys() == tlp.probe(model, x).keys()


def _keras_2_2_layout(src: Path, dst: Path, nested: str) -> Path:
    """Rewrites a tf_keras .h5 as Keras <= 2.2 wrote it: the nested Sequential's config has no
    InputLayer (its first layer keeps batch_input_shape) and the node indices stay as they are."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        entry = next(e for e in config["config"]["layers"] if e["name"] == nested)
        first, *rest = entry["config"]["layers"]
        assert first["class_name"] == "InputLayer" and "batch_input_shape" in rest[0]["config"]
        entry["config"]["layers"] = rest
        entry["config"].pop("build_input_shape", None)
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.2.4"
    return dst


def test_nested_sequential_with_implicit_input_layer(tf_keras, tmp_path):
    """Keras <= 2.2 counts the node of a nested Sequential's implicit input layer in the outer
    config (node 1 is the first call), as for an explicit one; tf_keras reads such a file alike."""
    seed(tf_keras)
    L = tf_keras.layers
    inner = tf_keras.Sequential(
        [
            L.LSTM(4, return_sequences=True, input_shape=(STEPS, FEATURES), name="in_lstm"),
            L.Dense(FEATURES, name="in_dense"),
        ],
        name="inner",
    )
    x = tf_keras.Input((STEPS, FEATURES), name="x")
    first = inner(x)
    model = tf_keras.Model(x, [L.LSTM(2, name="head")(inner(first)), first], name="outer")
    randomize_biases(model, np.random.default_rng(0))
    path = _keras_2_2_layout(save(model, tmp_path, "h5"), tmp_path / "keras2_2.h5", "inner")
    reloaded = tf_keras.models.load_model(str(path), compile=False)
    converted = tlp.load_keras(path)
    assert converted.layer("inner").input_names == ["in_lstm_input"]
    assert_every_call_matches(tf_keras, reloaded, converted, [_x()])


# ---------------------------------------------------------------------------- Keras 2.11 .keras archives

# Keras 2.11's saving_lib skips these attributes when it walks a layer for its variables.
_SAVING_LIB_SKIP = frozenset(
    {
        "weights",
        "trainable_weights",
        "non_trainable_weights",
        "variables",
        "trainable_variables",
        "non_trainable_variables",
        "submodules",
        "updates",
        "state_updates",
    }
)


def _to_snake_case(name: str) -> str:
    """Keras 2.11's ``generic_utils.to_snake_case``, which names a layer's group after its class."""
    name = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _write_keras_2_11_variables(klib, obj, h5: h5py.File, path: str, visited: set[int]) -> None:
    """Writes ``obj``'s state as Keras 2.11's ``saving_lib._save_state`` did: its own variables
    under ``<path>/vars/<i>``, then each layer held by an attribute (``<path>/<attr>``, in sorted
    ``dir()`` order) or by a list attribute (``<path>/<attr>/<snake_case class>[_N]``). The
    layers of this test keep their sublayers in public attributes (``layers``, ``cell``,
    ``forward_layer``, ``backward_layer``, ``layer``), so private ones are not walked."""
    if id(obj) in visited:
        return
    visited.add(id(obj))
    own = h5.create_group(f"{path}/vars" if path else "vars")
    for i, variable in enumerate(list(obj._trainable_weights) + list(obj._non_trainable_weights)):
        own[str(i)] = np.asarray(variable)
    for attr in sorted(dir(obj)):
        if attr.startswith("_") or attr in _SAVING_LIB_SKIP:
            continue
        try:
            child = getattr(obj, attr)
        except Exception:  # noqa: BLE001 - saving_lib skips attributes that raise
            continue
        where = f"{path}/{attr}".lstrip("/")
        if isinstance(child, klib.layers.Layer):
            _write_keras_2_11_variables(klib, child, h5, where, visited)
        elif isinstance(child, (list, tuple)):
            used: dict[str, int] = {}
            for item in child:
                if isinstance(item, klib.layers.Layer):
                    name = _to_snake_case(type(item).__name__)
                    used[name] = used.get(name, -1) + 1
                    name = f"{name}_{used[name]}" if used[name] else name
                    _write_keras_2_11_variables(klib, item, h5, f"{where}/{name}", visited)


def _h5_groups(h5: h5py.File) -> set[str]:
    groups: set[str] = set()
    h5.visititems(lambda name, item: groups.add(name) if isinstance(item, h5py.Group) else None)
    return groups


def test_keras_2_11_archive_with_variables_h5(tf_keras, tmp_path):
    """Keras 2.11 wrote ``.keras`` archives as config.json + metadata.json + variables.h5."""
    seed(tf_keras)
    L = tf_keras.layers
    ids = tf_keras.Input((STEPS,), dtype="int32", name="ids")
    y = L.Embedding(12, 4, mask_zero=True, name="emb")(ids)
    y = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")(y)
    y = L.GRU(3, name="gru")(y)
    model = tf_keras.Model(ids, L.Dense(2, name="head")(y), name="v2_11")
    randomize_biases(model, np.random.default_rng(0))
    modern = save(model, tmp_path, "keras")
    with zipfile.ZipFile(modern) as z:
        config = z.read("config.json")
        with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
            modern_groups = _h5_groups(h5)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        _write_keras_2_11_variables(tf_keras, model, h5, "", set())
        assert _h5_groups(h5) == modern_groups  # the layout inside did not change in 2.12
    path = tmp_path / "keras_2_11.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "2.11.0", "date_saved": "2023-01-10@12:00:00"}))
        z.writestr("config.json", config)
        z.writestr("variables.h5", buffer.getvalue())
    converted = tlp.load_keras(path)
    tokens = np.array([[3, 1, 7, 0, 0, 0], [11, 2, 5, 9, 4, 0]], np.int32)
    assert_every_call_matches(tf_keras, model, converted, [tokens])
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(tmp_path / "no_weights.keras", "w") as bare:
        for member in ("metadata.json", "config.json"):
            bare.writestr(member, z.read(member))
    with pytest.raises(
        tlp.KerasFileError, match=r"no weights \(no model.weights.h5, model.weights.npz or variables.h5\)"
    ):
        tlp.load_keras(tmp_path / "no_weights.keras")


# ---------------------------------------------------------------------------- TFOpLambda: refused as code


def _tf_function_model(tf_keras):
    import tensorflow as tf

    L = tf_keras.layers
    x = tf_keras.Input((STEPS, FEATURES), name="x")
    y = tf.transpose(x, perm=[0, 2, 1])  # TFOpLambda on one tensor: a bare inbound entry
    y = tf.concat([y, y * 2.0], axis=1)  # TFOpLambda on a list of tensors, and x * 2.0
    y = y[:, :, 1:]  # SlicingOpLambda
    return tf_keras.Model(x, L.LSTM(2, name="lstm")(y), name="tf_functions")


class TorchTFFunction(torch.nn.Module):
    """A user's module for the three TF functions of the model above, from the recorded arguments."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.function, self.arguments = config["function"], config["call_arguments"]

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        kwargs = self.arguments["kwargs"]
        if self.function == "compat.v1.transpose":
            return tensors[0].permute(*kwargs["perm"])
        if self.function == "math.multiply":
            return tensors[0] * kwargs["y"]
        if self.function == "concat":
            return torch.cat(tensors, dim=kwargs["axis"])
        assert self.function == "__operators__.getitem"
        return tensors[0][:, :, 1:]


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_tf_function_layers_are_refused_as_code(tf_keras, tmp_path, fmt):
    model = _tf_function_model(tf_keras)
    path = save(model, tmp_path, fmt)
    with pytest.raises(tlp.UnsupportedLayerError) as caught:
        tlp.load_keras(path)
    message = str(caught.value)
    assert isinstance(caught.value, tlp.UnsupportedLayerError) and not isinstance(caught.value, tlp.KerasFileError)
    for expected in (
        r"layer 'tf.compat.v1.transpose(_\d+)?' \(TFOpLambda\) is a call of the TensorFlow function tf.compat.v1.transpose",
        r"\(SlicingOpLambda\) is a call of the TensorFlow function tf.__operators__.getitem",
        r"replace the call with a Keras layer",
        r"custom_layers=\{'TFOpLambda': converter\}",
    ):
        assert re.search(expected, message), (expected, message)
    received = []

    def convert(config, weights):
        received.append(config)
        return TorchTFFunction(config)

    converted = tlp.load_keras(path, custom_layers={"TFOpLambda": convert, "SlicingOpLambda": convert})
    assert {"args": [{"__tensor__": 0}], "kwargs": {"perm": [0, 2, 1], "name": "transpose", "conjugate": False}} in [
        c["call_arguments"] for c in received
    ]
    assert_every_call_matches(tf_keras, model, converted, [_x()])
