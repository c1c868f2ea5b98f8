"""Reads Keras 3 (and tf_keras) ``.keras`` zip archives: config.json, metadata.json, weights."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py

from torch_lstm_probe.errors import KerasFileError

from ..spec import ModelSpec, parse_version
from .graph import library_of, parse_model_config
from .h5_weights import Keras3H5Weights
from .npz_weights import Keras3NpzWeights, read_npz_store

__all__ = ["read_keras_zip"]


def _json_member(archive: zipfile.ZipFile, name: str, path: Path | str) -> Any:
    try:
        return json.loads(archive.read(name))
    except KeyError:
        raise KerasFileError(
            f"{path}: the .keras archive has no {name!r}. Members: {sorted(archive.namelist())}."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KerasFileError(f"{path}: {name!r} in the archive is not valid JSON ({err}).") from err
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise KerasFileError(f"{path}: cannot read {name!r} from the archive ({err}); the file is damaged.") from err


def read_keras_zip(path: Path | str) -> ModelSpec:
    """Reads a ``.keras`` archive into a ModelSpec (weights loaded eagerly, no code executed)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise KerasFileError(f"{path}: not a readable zip archive ({err}); the .keras file is damaged or truncated.") from err
    with archive:
        config = _json_member(archive, "config.json", path)
        metadata = _json_member(archive, "metadata.json", path)
        names = set(archive.namelist())
        version = parse_version(metadata.get("keras_version"))
        if "model.weights.h5" in names:
            try:
                blob = archive.read("model.weights.h5")
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise KerasFileError(f"{path}: cannot read model.weights.h5 from the archive ({err}).") from err
            try:
                weights_file = h5py.File(io.BytesIO(blob), "r")
            except OSError as err:
                raise KerasFileError(f"{path}: model.weights.h5 in the archive is not valid HDF5 ({err}).") from err
        elif "model.weights.npz" in names:
            try:
                blob = archive.read("model.weights.npz")
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise KerasFileError(f"{path}: cannot read model.weights.npz from the archive ({err}).") from err
            return parse_model_config(
                config,
                source=str(path),
                keras_version=version,
                file_format="keras_zip",
                weights=Keras3NpzWeights(read_npz_store(blob, str(path)), str(path)),
                library=library_of(config, version),
            )
        else:
            raise KerasFileError(
                f"{path}: the .keras archive holds a config but no weights (no model.weights.h5). "
                f"Members: {sorted(names)}."
            )
        with weights_file:
            return parse_model_config(
                config,
                source=str(path),
                keras_version=version,
                file_format="keras_zip",
                weights=Keras3H5Weights(weights_file, str(path)),
                library=library_of(config, version),
            )
