"""The Keras 3 ``model.weights.npz`` weights layout, read without executing pickled code.

Keras writes each saved object's variables as one ``.npy`` member holding a pickled dict
``{"0": array, "1": array, …}`` (Keras itself then refuses to load it with
``allow_pickle=False``). This reader parses those members with an unpickler that can build only
dicts, NumPy arrays and dtypes: any other class named by the pickle is refused, so nothing in
the file can run code.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Mapping

import numpy as np

from torch_lstm_probe.errors import KerasFileError, WeightMismatchError

from .graph import LayerLocation
from .h5_weights import CHILD_ORDER
from .limits import max_weights_bytes, short_text
from .safety import charge_bytes, open_zip, read_member

__all__ = ["Keras3NpzWeights", "read_npz_store"]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _empty_reconstruct(reconstruct: Any) -> Any:
    """NumPy pickles an array as an empty shell plus its data; a shell with a shape would allocate
    memory that no byte of the file backs, so only empty shells are built."""

    def build(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not np.ndarray or tuple(shape) != (0,):
            raise pickle.UnpicklingError(
                f"refusing an array shell of type {subtype!r} and shape {short_text(repr(shape))}"
            )
        return reconstruct(subtype, shape, dtype)

    return build


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of NumPy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            found = super().find_class(module, name)
            return _empty_reconstruct(found) if name == "_reconstruct" else found
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed")


def _read_member(raw: bytes, member: str, source: str) -> dict[str, np.ndarray]:
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(buf)
        else:
            header = np.lib.format.read_array_header_2_0(buf)  # (shape, fortran, dtype)
    except (ValueError, SyntaxError, TypeError, EOFError) as err:
        raise KerasFileError(
            f"{source}: weights member {member!r} is not a .npy array ({short_text(str(err))})."
        ) from err
    shape, _, dtype = header
    if dtype != np.dtype(object):
        if not shape:
            return {}
        count = 1
        for dim in shape:
            count *= int(dim)
        if count * dtype.itemsize != len(raw) - buf.tell():
            raise KerasFileError(
                f"{source}: weights member {member!r} declares shape {short_text(repr(shape))} of {dtype} "
                f"({count * dtype.itemsize} bytes) but holds {len(raw) - buf.tell()} bytes of data."
            )
        return {"0": np.load(io.BytesIO(raw), allow_pickle=False)}
    try:
        value = _ArrayOnlyUnpickler(buf).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError, KeyError) as err:
        raise KerasFileError(
            f"{source}: weights member {member!r} cannot be read safely ({err}). Only pickled dicts of NumPy "
            "arrays are read; anything else could run code. Fix: re-save the model with the default h5 "
            "weights: model.save('model.keras')."
        ) from err
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    if not isinstance(value, dict) or not all(isinstance(v, np.ndarray) for v in value.values()):
        raise KerasFileError(f"{source}: weights member {member!r} is not a dict of arrays.")
    return {str(k): v for k, v in value.items()}


def read_npz_store(blob: bytes, source: str) -> dict[str, dict[str, np.ndarray]]:
    """``{object path: {variable index: array}}`` from the bytes of ``model.weights.npz``."""
    archive = open_zip(io.BytesIO(blob), source, "model.weights.npz")
    store = {}
    with archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            raw = read_member(archive, member, max_weights_bytes(), source)
            charge_bytes(len(raw), f"npz member {member!r}", source)
            store[member[: -len(".npy")]] = _read_member(raw, member, source)
    return store


class Keras3NpzWeights:
    """Weight source over an npz store; same positional paths as the Keras 3 h5 layout."""

    def __init__(self, store: Mapping[str, Mapping[str, np.ndarray]], source: str) -> None:
        self.store = store
        self.source = source

    def weights_for(
        self, location: LayerLocation, class_name: str, config: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        path = location.keras3_path
        if not any(key == path or key.startswith(path + "/") for key in self.store):
            return ()
        return tuple(self._collect(path, class_name))

    def _collect(self, path: str, class_name: str | None) -> list[np.ndarray]:
        own = self.store.get(path, {})
        try:
            arrays = [own[k] for k in sorted(own, key=int)]
        except ValueError as err:
            raise WeightMismatchError(
                f"{self.source}: variables at {path!r} are not numbered ({sorted(own)})."
            ) from err
        prefix = path + "/"
        children = sorted({key[len(prefix) :].split("/", 1)[0] for key in self.store if key.startswith(prefix)})
        order = CHILD_ORDER.get(class_name or "", ())
        children.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
        for child in children:
            arrays.extend(self._collect(prefix + child, None))
        return arrays
