"""Reads an in-memory ``keras.Model`` (Keras 3 or tf_keras). The only reader that touches Keras."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import numpy as np

from torch_lstm_probe.errors import KerasFileError

from ..spec import ModelSpec, parse_version
from .graph import LayerLocation, parse_model_config

__all__ = ["read_in_memory", "looks_like_keras_model"]


def looks_like_keras_model(obj: Any) -> bool:
    return hasattr(obj, "get_config") and hasattr(obj, "get_layer") and hasattr(obj, "to_json")


# Lookup layers whose vocabulary a live object holds while its config may not (an adapted layer,
# or one given a vocabulary file): the reader puts get_vocabulary() into the config.
_LOOKUP_CLASSES = frozenset({"TextVectorization", "StringLookup", "IntegerLookup"})


def _plain_token(layer: str, value: Any) -> str | int:
    """A vocabulary entry as a plain Python ``str`` or ``int`` (Keras returns numpy scalars)."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    if isinstance(value, (str, np.str_)):
        return str(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise KerasFileError(
        f"layer {layer!r}: get_vocabulary() returned {type(value).__name__} {value!r}. Expected str or int tokens. "
        "Fix: give the layer vocabulary= a list of str (or int) tokens."
    )


class _LayerObjects:
    """Takes weights straight from the live layer objects, in get_weights() order, and the vocabulary
    of lookup layers whose config does not list it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.vocabularies: dict[str, list[str | int]] = {}  # layer graph path -> get_vocabulary()

    def weights_for(
        self, location: LayerLocation, class_name: str, config: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        obj = self.model
        for name in location.names:
            # "layer" after a wrapper (TimeDistributed(model)) is the wrapped object itself.
            obj = obj.get_layer(name) if hasattr(obj, "get_layer") else getattr(obj, name)
        if class_name in _LOOKUP_CLASSES and hasattr(obj, "get_vocabulary"):
            vocabulary = config.get("vocabulary")
            if vocabulary is None or isinstance(vocabulary, str):
                tokens = obj.get_vocabulary(include_special_tokens=True)
                self.vocabularies[location.path] = [_plain_token(location.path, t) for t in tokens]
            # tf_keras lists the lookup table as a weight array (a saved file holds none): the
            # vocabulary above or in the config stands for it.
            return ()
        return tuple(np.asarray(w) for w in obj.get_weights())

    def attach(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with each collected vocabulary in its layer's config (nested models included)."""
        if not self.vocabularies:
            return spec
        layers = tuple(
            dataclasses.replace(
                layer,
                config=(
                    {**layer.config, "vocabulary": self.vocabularies[layer.path]}
                    if layer.path in self.vocabularies
                    else layer.config
                ),
                model=None if layer.model is None else self.attach(layer.model),
            )
            for layer in spec.layers
        )
        return dataclasses.replace(spec, layers=layers)


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
    objects = _LayerObjects(model)
    spec = parse_model_config(
        config,
        source=f"<keras.Model {getattr(model, 'name', '')}>",
        keras_version=parse_version(version),
        file_format="in_memory",
        weights=objects,
        library=library,
    )
    return objects.attach(spec)
