"""Reads an in-memory ``keras.Model`` (Keras 3 or tf_keras). The only reader that touches Keras."""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from torch_lstm_probe.errors import KerasFileError

from ..spec import ModelSpec, parse_version
from .graph import LayerLocation, parse_model_config

__all__ = ["read_in_memory", "looks_like_keras_model"]


def looks_like_keras_model(obj: Any) -> bool:
    return hasattr(obj, "get_config") and hasattr(obj, "get_layer") and hasattr(obj, "to_json")


class _LayerObjects:
    """Takes weights straight from the live layer objects, in get_weights() order."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def weights_for(
        self, location: LayerLocation, class_name: str, config: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        obj = self.model
        for name in location.names:
            # "layer" after a wrapper (TimeDistributed(model)) is the wrapped object itself.
            obj = obj.get_layer(name) if hasattr(obj, "get_layer") else getattr(obj, name)
        return tuple(np.asarray(w) for w in obj.get_weights())


def read_in_memory(model: Any) -> ModelSpec:
    """Builds a ModelSpec from a live Keras model object."""
    module = type(model).__module__
    if module.startswith("tf_keras"):
        import tf_keras

        version, library = tf_keras.__version__, "tf_keras"
    elif module.startswith("keras"):
        import keras

        version, library = keras.__version__, "keras"
    else:
        raise KerasFileError(
            f"Expected a keras.Model or tf_keras Model. Received {type(model).__module__}.{type(model).__name__}."
        )
    try:
        config = json.loads(model.to_json())
    except NotImplementedError as err:
        raise KerasFileError(
            f"Model {getattr(model, 'name', '?')!r} of class {type(model).__name__} has no config "
            "(a subclassed model). Fix: build it as a Sequential or Functional model."
        ) from err
    return parse_model_config(
        config,
        source=f"<keras.Model {getattr(model, 'name', '')}>",
        keras_version=parse_version(version),
        file_format="in_memory",
        weights=_LayerObjects(model),
        library=library,
    )
