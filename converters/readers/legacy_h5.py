"""Reads legacy ``.h5`` model files (Keras 1, Keras 2, tf.keras, tf_keras, Keras 3's h5 saver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from torch_lstm_probe.errors import KerasFileError

from ..spec import ModelSpec, parse_version
from .graph import decode, library_of, parse_model_config
from .h5_weights import Keras3H5Weights, LegacyH5Weights
from .limits import short_text
from .safety import check_h5_file, load_json, read_attr

__all__ = ["read_legacy_h5", "open_h5", "weights_source_for_h5", "text_attr"]


def open_h5(path: Path | str) -> h5py.File:
    """Opens an HDF5 file read-only and checks its whole structure (``safety.check_h5_file``)
    before anything is read from it; h5py's OSErrors become a KerasFileError."""
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError, RuntimeError) as err:
        raise KerasFileError(
            f"{path}: cannot open as an HDF5 file ({short_text(str(err))}). The file is truncated or is not a Keras "
            ".h5 file."
        ) from err
    try:
        check_h5_file(f, str(path), f.id.get_filesize())
    except BaseException:
        f.close()
        raise
    return f


def _json_attr(f: h5py.File, key: str) -> Any:
    try:
        value = decode(read_attr(f, key, f.filename))
    except UnicodeDecodeError as err:
        raise KerasFileError(f"{f.filename}: the {key!r} attribute is not UTF-8 text ({err}).") from err
    if not isinstance(value, (str, bytes)):
        raise KerasFileError(
            f"{f.filename}: the {key!r} attribute is not JSON text. Received a {type(value).__name__}."
        )
    return load_json(value, f"the {key!r} attribute", f.filename)


def text_attr(f: h5py.File, key: str) -> str | None:
    """A short text attribute (``keras_version``, ``backend``), or None when absent or not text."""
    try:
        value = decode(read_attr(f, key, f.filename))
    except UnicodeDecodeError as err:
        raise KerasFileError(f"{f.filename}: the {key!r} attribute is not UTF-8 text ({err}).") from err
    return value if isinstance(value, str) else None


def weights_source_for_h5(f: h5py.File) -> LegacyH5Weights | Keras3H5Weights:
    """The weight source of a whole-model or weights-only HDF5 file, by its layout."""
    if "model_weights" in f:
        return LegacyH5Weights(f["model_weights"], f.filename)
    if "layer_names" in f.attrs:
        return LegacyH5Weights(f, f.filename)
    if "layers" in f or "vars" in f:
        return Keras3H5Weights(f, f.filename)
    raise KerasFileError(
        f"{f.filename}: holds no Keras weights (no 'model_weights' group, no 'layer_names' attribute, "
        "no Keras 3 'layers' group)."
    )


def read_legacy_h5(path: Path | str) -> ModelSpec:
    """Reads a whole-model legacy ``.h5`` file into a ModelSpec (weights loaded eagerly)."""
    f = open_h5(path)
    with f:
        if "model_config" not in f.attrs:
            if "layer_names" in f.attrs or "layers" in f:
                raise KerasFileError(
                    f"{path}: this .h5 holds weights only (written by save_weights), not a model config. "
                    "Fix: pass the architecture too: tlp.load_keras('model.json', weights=...)."
                )
            raise KerasFileError(f"{path}: HDF5 file without a 'model_config' attribute: not a Keras model file.")
        config = _json_attr(f, "model_config")
        version = parse_version(text_attr(f, "keras_version"))
        backend = text_attr(f, "backend")
        if "model_weights" not in f:
            raise KerasFileError(
                f"{path}: the file has a model config but no 'model_weights' group: it was saved without "
                "weights. Fix: save the trained model with its weights (model.save)."
            )
        return parse_model_config(
            config,
            source=str(path),
            keras_version=version,
            file_format="legacy_h5",
            weights=weights_source_for_h5(f),
            backend=str(backend) if backend is not None else None,
            library=library_of(config, version),
        )
