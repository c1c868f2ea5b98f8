"""The format-neutral model spec that every reader produces and every converter reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = ["TensorRef", "CallSpec", "LayerSpec", "InputSpec", "ModelSpec", "KerasVersion", "parse_version"]


@dataclass(frozen=True)
class TensorRef:
    """The ``index``-th output tensor of the ``node``-th call of layer ``layer``."""

    layer: str
    node: int
    index: int

    def as_list(self) -> list[Any]:
        return [self.layer, self.node, self.index]


@dataclass(frozen=True)
class CallSpec:
    """One call of a layer in the graph: positional args and keyword args.

    Tensors appear as :class:`TensorRef`; several tensors passed as one argument form a tuple.
    """

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    name: str  # the Keras input layer's name
    shape: tuple[int | None, ...] | None  # Keras batch shape (batch axis first); None if unknown
    dtype: str  # Keras dtype name, e.g. "float32", "int32"


@dataclass(frozen=True)
class LayerSpec:
    """One Keras layer: identity, config, weights in ``get_weights()`` order, and its calls."""

    name: str  # the user's Keras layer name
    class_name: str  # Keras class name, e.g. "LSTM"
    config: Mapping[str, Any]  # the layer's Keras config dict
    weights: tuple[np.ndarray, ...] = ()  # Keras get_weights() order
    calls: tuple[CallSpec, ...] = ()  # inbound nodes, in node-index order
    model: ModelSpec | None = None  # for a nested model used as a layer
    path: str = ""  # graph path, "outer/inner/name", for messages
    module: str | None = None  # Keras "module" of the class, when the file records it
    registered_name: str | None = None  # "package>Class" of a registered custom class
    # Files the layer saved in a .keras archive's assets/<its Keras 3 path>/ folder, by path
    # inside that folder (e.g. a lookup layer's "vocabulary.txt"); read as bytes, never executed.
    assets: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, order=True)
class KerasVersion:
    major: int
    minor: int = 0
    patch: int = 0
    tf: bool = field(default=False, compare=False)  # "-tf" suffix: the Keras bundled in TensorFlow 1.x/2.0-2.3

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + ("-tf" if self.tf else "")


def parse_version(text: str | bytes | None) -> KerasVersion:
    """Parses a ``keras_version`` attribute; a missing one means Keras 1 (as Keras itself assumes)."""
    if text is None:
        return KerasVersion(1)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    numbers = []
    text, _, suffix = str(text).partition("-")
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        numbers.append(int(digits))
    if not numbers:
        return KerasVersion(1)
    return KerasVersion(*numbers, tf=suffix.startswith("tf"))


@dataclass(frozen=True)
class ModelSpec:
    """A whole Keras model, independent of the file format it came from."""

    name: str
    class_name: str  # "Sequential", "Functional", "Model"
    layers: tuple[LayerSpec, ...]  # non-input layers, in config order
    inputs: tuple[InputSpec, ...]
    outputs: tuple[TensorRef, ...]
    keras_version: KerasVersion
    source: str  # file path, or "<keras.Model>" for an in-memory model
    file_format: str  # "keras_zip", "legacy_h5", "json+h5", "in_memory"
    backend: str | None = None  # the "backend" attribute of legacy files
    library: str = "keras"  # "keras" (standalone / Keras 3) or "tf_keras"
