"""Reads Keras 3 (and tf_keras) ``.keras`` zip archives: config.json, metadata.json, weights."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from torch_lstm_probe.errors import KerasFileError

from ..spec import ModelSpec, parse_version
from .graph import LayerLocation, WeightSource, library_of, parse_model_config
from .h5_weights import Keras3H5Weights
from .limits import MAX_JSON_BYTES, max_weights_bytes
from .npz_weights import Keras3NpzWeights, read_npz_store
from .safety import charge_bytes, load_json, open_h5_bytes, open_zip, read_member

__all__ = ["read_keras_zip"]


def _json_member(archive: zipfile.ZipFile, name: str, path: Path | str) -> Any:
    try:
        raw = read_member(archive, name, MAX_JSON_BYTES, str(path))
    except KeyError:
        raise KerasFileError(
            f"{path}: the .keras archive has no {name!r}. Members: {sorted(archive.namelist())[:20]}."
        ) from None
    value = load_json(raw, f"{name!r} in the archive", str(path))
    if not isinstance(value, dict):
        raise KerasFileError(f"{path}: {name!r} in the archive holds a JSON {type(value).__name__}, not an object.")
    return value


class _WithAssets:
    """A weight source that also reads the files each layer saved under ``assets/<its Keras 3 path>/``.

    Keras 3 saves a lookup layer's adapted vocabulary there (``vocabulary.txt``), not in the
    config. Each member is read as bytes within ``MAX_JSON_BYTES`` and charged to the file's byte
    budget, like the weights.
    """

    def __init__(self, inner: WeightSource, archive: zipfile.ZipFile, source: str) -> None:
        self.inner = inner
        self.archive = archive
        self.source = source
        self.members = sorted(n for n in archive.namelist() if n.startswith("assets/") and not n.endswith("/"))
        self.by_layer: dict[str, dict[str, bytes]] = {}  # layer graph path -> {path in its folder: bytes}

    def weights_for(
        self, location: LayerLocation, class_name: str, config: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        folder = f"assets/{location.keras3_path}/"
        found = {}
        for name in self.members:
            if name.startswith(folder):
                blob = read_member(self.archive, name, MAX_JSON_BYTES, self.source)
                charge_bytes(len(blob), name, self.source)
                found[name[len(folder) :]] = blob
        if found:
            self.by_layer[location.path] = found
        return self.inner.weights_for(location, class_name, config)

    def attach(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with each layer's assets set (nested models included)."""
        if not self.by_layer:
            return spec
        layers = tuple(
            dataclasses.replace(
                layer,
                assets=self.by_layer.get(layer.path, layer.assets),
                model=None if layer.model is None else self.attach(layer.model),
            )
            for layer in spec.layers
        )
        return dataclasses.replace(spec, layers=layers)


def read_keras_zip(path: Path | str) -> ModelSpec:
    """Reads a ``.keras`` archive into a ModelSpec (weights loaded eagerly, no code executed)."""
    archive = open_zip(path, str(path))
    with archive:
        config = _json_member(archive, "config.json", path)
        metadata = _json_member(archive, "metadata.json", path)
        names = set(archive.namelist())
        version = parse_version(metadata.get("keras_version"))
        # Keras 2.11's saving_lib named the weights member variables.h5 (2.12 renamed it); the
        # groups inside are laid out alike: layers/<snake_case class>[_N]/.../vars/<i>.
        h5_member = next((m for m in ("model.weights.h5", "variables.h5") if m in names), None)
        if h5_member is not None:
            blob = read_member(archive, h5_member, max_weights_bytes(), str(path))
            stored = archive.getinfo(h5_member).compress_size
            weights_file = open_h5_bytes(blob, h5_member, str(path), stored_bytes=stored)
        elif "model.weights.npz" in names:
            blob = read_member(archive, "model.weights.npz", max_weights_bytes(), str(path))
            weights = _WithAssets(Keras3NpzWeights(read_npz_store(blob, str(path)), str(path)), archive, str(path))
            spec = parse_model_config(
                config,
                source=str(path),
                keras_version=version,
                file_format="keras_zip",
                weights=weights,
                library=library_of(config, version),
            )
            return weights.attach(spec)
        else:
            raise KerasFileError(
                f"{path}: the .keras archive holds a config but no weights (no model.weights.h5, "
                "model.weights.npz or variables.h5). "
                f"Members: {sorted(names)}."
            )
        with weights_file:
            weights = _WithAssets(Keras3H5Weights(weights_file, str(path)), archive, str(path))
            spec = parse_model_config(
                config,
                source=str(path),
                keras_version=version,
                file_format="keras_zip",
                weights=weights,
                library=library_of(config, version),
            )
            return weights.attach(spec)
