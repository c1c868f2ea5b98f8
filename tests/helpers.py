"""Helpers for parity tests: build/save Keras models, compute Keras' per-layer outputs, compare."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

import torch_lstm_probe as tlp

# One table of tolerances for the whole suite (absolute, max over elements).
ATOL = {
    "cpu_float32": 1e-5,
    "cpu_float64": 1e-5,  # Keras computes in float32; a float64 port is compared at the same bar
    "gpu_float32": 2e-5,  # measured with TF32 off; see tests/test_gpu.py
}


def import_keras(name: str):
    """Imports ``keras`` (Keras 3) or ``tf_keras`` (Keras 2); skips the test when it is not installed."""
    import pytest

    try:
        return importlib.import_module(name)
    except ImportError as err:
        pytest.skip(f"{name} is not installed ({err}); live Keras tests need: pip install -e '.[test]'")


def library_name(klib) -> str:
    return "tf_keras" if klib.__name__.startswith("tf_keras") else "keras"


def seed(klib, value: int = 1234) -> None:
    klib.utils.set_random_seed(value)


def randomize_biases(model, rng: np.random.Generator, scale: float = 0.1) -> None:
    """Biases default to zero; give them small random values so bias handling is exercised."""
    for layer in _all_layers(model):
        weights = layer.get_weights()
        if not weights:
            continue
        names = [w.name for w in layer.weights]
        new = [
            (rng.uniform(-scale, scale, w.shape).astype(w.dtype) if "bias" in n.split("/")[-1] else w)
            for w, n in zip(weights, names)
        ]
        layer.set_weights(new)


def _all_layers(model) -> list:
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Sequential", "Functional", "Model"):
            out.extend(_all_layers(layer))
        else:
            out.append(layer)
    return out


def save(model, tmp_path: Path, fmt: str) -> Path:
    """Saves ``model`` as ``.keras`` or legacy ``.h5`` and returns the path."""
    path = Path(tmp_path) / f"{model.name}.{fmt}"
    model.save(str(path))
    return path


def keras_outputs(model, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    y = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    ys = y if isinstance(y, (list, tuple)) else [y]
    return [np.asarray(t) for t in ys]


def keras_layer_outputs(klib, model, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Every non-input layer's output computed by Keras, keyed like tlp.probe (``name`` / ``name:k``)."""
    layers = [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]
    outputs = []
    keys = []
    for layer in layers:
        out = layer.output
        if isinstance(out, (list, tuple)):
            for k, o in enumerate(out):
                outputs.append(o)
                keys.append(f"{layer.name}:{k}")
        else:
            outputs.append(out)
            keys.append(layer.name)
    probe_model = klib.Model(model.inputs, outputs)
    values = probe_model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return {k: np.asarray(v) for k, v in zip(keys, values)}


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def assert_close(actual: Any, expected: Any, atol: float = ATOL["cpu_float32"], what: str = "") -> None:
    a, e = to_numpy(actual), to_numpy(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != Keras {e.shape}"
    err = float(np.max(np.abs(a - e))) if a.size else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"


class KerasReference(NamedTuple):
    """What Keras computes for one model and one input set: every layer's output and the final outputs."""

    layers: dict[str, np.ndarray]
    outputs: list[np.ndarray]


def keras_reference(klib, model, inputs: Sequence[np.ndarray]) -> KerasReference:
    """Runs Keras once for ``assert_model_parity``; reuse it when checking several loads of one model.

    Keras inference on a fixed model and input is deterministic, and running it eagerly is the
    slow part of a parity check, so a model loaded from memory, ``.keras`` and ``.h5`` is
    compared with one reference instead of three identical ones.
    """
    return KerasReference(keras_layer_outputs(klib, model, inputs), keras_outputs(model, inputs))


def assert_model_parity(
    klib,
    keras_model,
    tlp_model,
    inputs: Sequence[np.ndarray],
    atol: float = ATOL["cpu_float32"],
    reference: KerasReference | None = None,
) -> None:
    """Compares the final outputs and every layer's output of a converted model with Keras.

    ``reference`` is ``keras_reference(klib, keras_model, inputs)``, computed here when not given.
    """
    if reference is None:
        reference = keras_reference(klib, keras_model, inputs)
    expected_layers = reference.layers
    acts = tlp.probe(tlp_model, list(inputs) if len(inputs) > 1 else inputs[0])
    missing = sorted(set(expected_layers) - set(acts))
    assert not missing, f"probe lacks keys {missing}; has {sorted(acts)}"
    for key, expected in expected_layers.items():
        assert_close(acts[key], expected, atol, f"layer {key}")
    expected_out = reference.outputs
    with torch.inference_mode():
        got = tlp_model(*inputs)
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(expected_out)
    for k, (g, e) in enumerate(zip(got, expected_out)):
        assert_close(g, e, atol, f"output {k}")
