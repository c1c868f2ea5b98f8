"""Weight sources over HDF5 groups: the legacy ``model_weights`` layout and the Keras 3 layout."""

from __future__ import annotations

from typing import Any, Mapping

import h5py
import numpy as np

from torch_lstm_probe.errors import KerasFileError, WeightMismatchError

from .graph import LayerLocation, decode
from .limits import short_repr
from .safety import read_attr, read_dataset

__all__ = ["LegacyH5Weights", "Keras3H5Weights", "CHILD_ORDER"]

# Keras 3 saves the children of a layer sorted by attribute name; get_weights() follows the
# layer's own order. Where the two differ, this table gives get_weights() order.
CHILD_ORDER: dict[str, tuple[str, ...]] = {
    "Bidirectional": ("forward_layer", "backward_layer"),
    # Keras 3 names the projections query_dense, …; tf_keras _query_dense, …
    **{
        name: tuple(f"{u}{p}_dense" for p in ("query", "key", "value", "output") for u in ("", "_"))
        for name in ("MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention")
    },
}


def _read(dataset: Any, source: str, where: str) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset):
        raise KerasFileError(f"{source}: weights {where} is an HDF5 {type(dataset).__name__}, not a dataset.")
    return read_dataset(dataset, source, where)


def _names(obj: Any, key: str, source: str) -> list[str]:
    """A list-of-names attribute (``layer_names``, ``weight_names``) as Python strings."""
    value = read_attr(obj, key, source, [])
    try:
        names = [decode(n) for n in (value.tolist() if isinstance(value, np.ndarray) else value)]
    except (TypeError, UnicodeDecodeError) as err:
        raise KerasFileError(f"{source}: attribute {key!r} of {obj.name!r} is not a list of names ({err}).") from err
    if not all(isinstance(n, str) and _is_utf8(n) for n in names):
        raise KerasFileError(
            f"{source}: attribute {key!r} of {obj.name!r} holds {short_repr(names)}; expected UTF-8 names."
        )
    return names


def _is_utf8(text: str) -> bool:
    """False for text h5py decoded from invalid UTF-8 (it keeps such bytes as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class LegacyH5Weights:
    """``model_weights/<layer>`` groups listing their arrays in the ``weight_names`` attribute.

    Written by Keras 1/2, tf.keras, tf_keras and Keras 3's legacy ``.h5`` saver. tf.keras names
    end in ``:0``; Keras 3 drops it and prefixes Sequential models' names with the model name.
    """

    def __init__(self, group: h5py.Group, source: str, renamed: Mapping[str, str] | None = None) -> None:
        self.group = group
        self.source = source
        self.renamed = dict(renamed or {})  # model layer name -> the file's group name

    def weighted_layer_names(self) -> list[str]:
        """The file's layers that hold weights, in the file's order (Keras' ``layer_names``)."""
        names = _names(self.group, "layer_names", self.source)
        return [
            n
            for n in names
            if isinstance(self.group.get(n), h5py.Group) and _names(self.group[n], "weight_names", self.source)
        ]

    def weights_for(
        self, location: LayerLocation, class_name: str, config: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        top = self.renamed.get(location.names[0], location.names[0])
        if top not in self.group:
            return ()
        layer_group = self.group[top]
        if not isinstance(layer_group, h5py.Group):
            raise KerasFileError(f"{self.source}: the weights of layer {location.path!r} are not an HDF5 group.")
        names = _names(layer_group, "weight_names", self.source)
        if len(location.names) > 1:
            # A layer inside a nested model: the nested model's group lists all inner weights;
            # keep those whose path mentions the inner layer.
            inner = location.names[-1]
            names = [n for n in names if inner in n.split("/")]
        arrays = []
        for weight_name in names:
            if weight_name not in layer_group:
                raise KerasFileError(
                    f"{self.source}: layer {location.path!r} lists weight {weight_name!r}, which the file lacks. "
                    "The file is damaged or truncated."
                )
            arrays.append(_read(layer_group[weight_name], self.source, f"{location.path}/{weight_name}"))
        return tuple(arrays)


class Keras3H5Weights:
    """The Keras 3 ``model.weights.h5`` layout: ``layers/<snake_class>[_N]/…/vars/<i>``.

    Paths are positional (class name plus a per-container counter), not the user's names.
    Recent Keras 3 versions also record the layer name in the ``vars`` group's ``name``
    attribute; when present it is checked, so a miscounted path is caught rather than loaded.
    """

    def __init__(self, root: h5py.Group, source: str) -> None:
        self.root = root
        self.source = source

    def weights_for(
        self, location: LayerLocation, class_name: str, config: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        path = location.keras3_path
        group = self.root.get(path)
        recorded = self._recorded_name(group)
        if recorded is not None and recorded != location.names[-1]:
            group = self._find_by_name(path, location.names[-1])
            if group is None:
                raise WeightMismatchError(
                    f"{self.source}: the weights at {path!r} belong to layer {recorded!r}, not to layer "
                    f"{location.path!r} ({class_name}), and no sibling group names that layer."
                )
        if group is None:
            return ()
        return tuple(self._collect(group, class_name))

    def _recorded_name(self, group: h5py.Group | None) -> str | None:
        if group is None or "vars" not in group:
            return None
        name = read_attr(group["vars"], "name", self.source)
        return None if name is None else str(decode(name))

    def _find_by_name(self, path: str, name: str) -> h5py.Group | None:
        parent = self.root.get(path.rsplit("/", 1)[0]) if "/" in path else self.root
        if parent is None:
            return None
        for child in parent.values():
            if isinstance(child, h5py.Group) and self._recorded_name(child) == name:
                return child
        return None

    def _collect(self, group: h5py.Group, class_name: str | None) -> list[np.ndarray]:
        arrays: list[np.ndarray] = []
        if "vars" in group:
            variables = group["vars"]
            if not isinstance(variables, h5py.Group):
                raise KerasFileError(f"{self.source}: {variables.name!r} is not an HDF5 group of variables.")
            keys = list(variables.keys())
            if not all(key.isdigit() for key in keys):
                raise KerasFileError(
                    f"{self.source}: the variables in {variables.name!r} are named {short_repr(sorted(keys))}; "
                    "expected their indices 0, 1, ..."
                )
            for key in sorted(keys, key=int):
                arrays.append(_read(variables[key], self.source, f"{group.name}/vars/{key}"))
        children = [k for k in group.keys() if k != "vars" and isinstance(group[k], h5py.Group)]
        order = CHILD_ORDER.get(class_name or "", ())
        children.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
        for child in children:
            arrays.extend(self._collect(group[child], None))
        return arrays
