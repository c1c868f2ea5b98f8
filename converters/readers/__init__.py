"""Readers: turn a Keras model file (or live model) into a format-neutral ModelSpec.

Only this package touches h5py, zip archives and JSON. Loading a file never imports
TensorFlow or Keras and never executes code stored in the file. A path is read in a forked child
process under a timeout (:mod:`.isolation`), within the limits of :mod:`.limits`, through the
guards of :mod:`.safety`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch_lstm_probe.errors import KerasFileError, WeightMismatchError

from ..spec import ModelSpec, parse_version
from .graph import library_of, parse_model_config
from .h5_weights import LegacyH5Weights
from .in_memory import looks_like_keras_model, read_in_memory
from .isolation import run_isolated
from .keras_zip import read_keras_zip
from .legacy_h5 import open_h5, read_legacy_h5, text_attr, weights_source_for_h5
from .limits import MAX_JSON_BYTES, read_timeout_s
from .safety import file_boundary, load_json, read_budget, read_head, require_regular_file

__all__ = ["read", "read_in_memory", "read_keras_zip", "read_legacy_h5", "read_json_with_weights"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _head(path: Path) -> bytes:
    return read_head(path, 16)


def read_json_with_weights(arch: Path | str, weights: Path | str) -> ModelSpec:
    """Architecture JSON (``model.to_json()``) plus a weights-only h5 (``save_weights``)."""
    arch, weights = Path(arch), Path(weights)
    require_regular_file(arch, "architecture file")
    with open(arch, "rb") as fh:
        raw = fh.read(MAX_JSON_BYTES + 1)
    config = load_json(raw, "the architecture JSON (the text of model.to_json())", str(arch))
    if not isinstance(config, dict):
        raise KerasFileError(f"{arch}: the JSON is not a model config object.")
    if not weights.exists():
        raise FileNotFoundError(f"Weights file not found: {weights}")
    require_regular_file(weights, "weights file")
    if _head(weights)[:8] != _HDF5_MAGIC:
        raise KerasFileError(f"{weights}: not an HDF5 weights file (expected the output of model.save_weights).")
    with open_h5(weights) as f:
        version_text = config.get("keras_version") or text_attr(f, "keras_version")
        if version_text is None and ("layers" in f or "vars" in f):
            version_text = "3"  # the Keras 3 weights layout exists only in Keras 3
        version = parse_version(version_text)
        backend = config.get("backend") or text_attr(f, "backend")
        source = weights_source_for_h5(f)
        options = dict(
            source=f"{arch} + {weights}",
            keras_version=version,
            file_format="json+h5",
            backend=backend,
            library=library_of(config, version),
        )
        if isinstance(source, LegacyH5Weights):
            layout = parse_model_config(config, weights=None, **options)  # names and classes only
            source = LegacyH5Weights(source.group, source.source, _match_by_order(layout, source, weights))
        return parse_model_config(config, weights=source, **options)


# Layer classes that hold no weights, for matching a weights file to an architecture by order.
_WEIGHTLESS = frozenset(
    {
        "InputLayer",
        "Dropout",
        "SpatialDropout1D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "Activation",
        "Flatten",
        "Reshape",
        "Permute",
        "RepeatVector",
        "Masking",
        "ZeroPadding1D",
        "Cropping1D",
        "UpSampling1D",
        "MaxPooling1D",
        "AveragePooling1D",
        "GlobalMaxPooling1D",
        "GlobalAveragePooling1D",
        *(f"{kind}{n}D" for n in (2, 3) for kind in ("SpatialDropout", "ZeroPadding", "Cropping", "UpSampling")),
        *(f"{kind}{n}D" for n in (2, 3) for kind in ("MaxPooling", "AveragePooling")),
        *(f"Global{kind}Pooling{n}D" for n in (2, 3) for kind in ("Max", "Average")),
        "ActivityRegularization",
        "Rescaling",
        "CategoryEncoding",
        "IntegerLookup",
        "Concatenate",
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Dot",
        "Softmax",
        "ReLU",
        "LeakyReLU",
        "ELU",
    }
)


def _match_by_order(layout: ModelSpec, source: LegacyH5Weights, path: Path) -> dict[str, str]:
    """Keras loads a weights-only h5 by the order of the layers that hold weights, not by name.

    When every layer name of the file is in the architecture, names and order agree and no
    renaming is needed. Otherwise the architecture's weighted layers are paired with the file's
    in order, as Keras' ``load_weights`` does, and a count mismatch is an error.
    """
    file_layers = source.weighted_layer_names()
    model_names = [layer.name for layer in layout.layers]
    if all(name in model_names for name in file_layers):
        return {}
    weighted = [
        layer.name
        for layer in layout.layers
        if layer.class_name not in _WEIGHTLESS and not str(layer.module or "").startswith("keras.src.ops")
    ]
    if len(weighted) != len(file_layers):
        raise WeightMismatchError(
            f"{path}: the layer names differ from the architecture's, so the weights are matched by order as "
            f"Keras does, but the file holds weights for {len(file_layers)} layer(s) {file_layers} and the "
            f"architecture has {len(weighted)} layer(s) with weights {weighted}. The files do not belong together."
        )
    return dict(zip(weighted, file_layers))


def read(source: Any, weights: Any = None) -> ModelSpec:
    """Reads any supported source into a ModelSpec.

    Args:
        source: a ``.keras`` archive, a legacy ``.h5``, an architecture ``.json`` (with
            ``weights``), or an in-memory Keras model.
        weights: a weights-only ``.h5`` for a JSON architecture.

    Raises:
        FileNotFoundError: the path does not exist.
        KerasFileError: the file is not a Keras model file, is damaged, or lacks weights.
        UnsafeFileError: the file asks to read data from elsewhere (see ``safety.check_h5_file``).
        FileLimitError: the file exceeds a limit of ``limits``, or took longer than the read timeout.
    """
    if not isinstance(source, (str, os.PathLike)):
        if looks_like_keras_model(source):
            if weights is not None:
                raise KerasFileError("weights= is only for a JSON architecture file, not for an in-memory model.")
            return read_in_memory(source)
        raise KerasFileError(
            f"Cannot load a {type(source).__name__}. Expected a path to a .keras/.h5/.json file or a keras.Model."
        )
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"Keras model file not found: {path}")
    if path.is_dir():
        raise KerasFileError(
            f"{path}: is a directory (a TensorFlow SavedModel?). SavedModel directories hold TF graphs, not "
            "Keras configs. Fix: load it in TensorFlow and save it as .keras or .h5."
        )
    stored = require_regular_file(path)
    weights_path = None
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise KerasFileError(f"weights= must be a path to a weights .h5 file. Received a {type(weights).__name__}.")
        weights_path = Path(weights)
        if not weights_path.exists():
            raise FileNotFoundError(f"Weights file not found: {weights_path}")
        stored += require_regular_file(weights_path, "weights file")
    return run_isolated(_read_file, (path, weights_path, stored), str(path), read_timeout_s(stored))


def _read_file(path: Path, weights: Path | None, stored: int) -> ModelSpec:
    """Reads a model file (and its weights file) within the byte budget of ``stored`` bytes; any
    exception the bytes provoke leaves as a typed error naming the file."""
    others = () if weights is None else (str(weights),)
    with file_boundary(str(path), *others), read_budget(str(path), stored):
        return _dispatch(path, weights)


def _dispatch(path: Path, weights: Path | None) -> ModelSpec:
    head = _head(path)
    if weights is not None:
        if head.lstrip()[:1] != b"{":
            raise KerasFileError(
                f"{path}: weights= was given, so this must be an architecture JSON file; it is not JSON."
            )
        return read_json_with_weights(path, weights)
    if head[:2] == b"PK":
        return read_keras_zip(path)
    if head[:8] == _HDF5_MAGIC:
        return read_legacy_h5(path)
    if head.lstrip()[:1] == b"{":
        raise KerasFileError(
            f"{path}: a JSON architecture has no weights. Fix: tlp.load_keras({str(path)!r}, weights='weights.h5')."
        )
    raise KerasFileError(
        f"{path}: not a Keras model file. Expected a .keras zip archive, an HDF5 .h5 file, or an architecture "
        f"JSON with weights=. The file starts with {head[:8]!r}."
    )
