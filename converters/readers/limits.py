"""The safety limits of the readers: every bound on what an untrusted file may make the loader do.

The readers are the only code that touches the bytes of a model file, so every limit lives here,
as a named constant with the reason for its value. A file that exceeds one raises
:class:`~torch_lstm_probe.errors.FileLimitError` naming the file, the limit and how to raise it
where raising it makes sense.

Sizes are chosen so that every genuine Keras model of the kind this package converts passes with a
wide margin, while no file can make the loader allocate more than

    ``min(max_weights_bytes(), max(EXPANSION_FLOOR_BYTES, MAX_EXPANSION_RATIO * stored bytes))``

for its arrays (``stored bytes``: the size of the file on disk), plus at most ``MAX_JSON_BYTES``
for each JSON document and ``MAX_ATTRIBUTE_BYTES`` for each HDF5 attribute. A ``.keras`` archive
also holds its decompressed weights member in memory while the arrays are read from it; that
member is bounded the same way, so reading an archive peaks at about twice the bound.

Three settings can be changed through the environment, read at each load:

- ``TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES``: the absolute bound on array bytes (default 4 GiB);
- ``TORCH_LSTM_PROBE_READ_TIMEOUT``: seconds a file may take to read before it is declared hung
  (default ``READ_TIMEOUT_BASE_S`` plus ``READ_TIMEOUT_PER_GIB_S`` per GiB of file);
- ``TORCH_LSTM_PROBE_READ_ISOLATION``: ``fork`` (the default on Linux) reads each file in a forked
  child process under that timeout; ``off`` reads in the calling process (no hang guard).
"""

from __future__ import annotations

import os
import reprlib
import sys
from typing import Any

from torch_lstm_probe.errors import FileLimitError

__all__ = [
    "KIB",
    "MIB",
    "GIB",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MODEL_NESTING",
    "MAX_NAME_CHARS",
    "MAX_ATTRIBUTE_BYTES",
    "MAX_ATTRIBUTE_ELEMENTS",
    "MAX_H5_OBJECTS",
    "MAX_H5_DEPTH",
    "MAX_ZIP_MEMBERS",
    "DEFAULT_MAX_WEIGHTS_BYTES",
    "MAX_EXPANSION_RATIO",
    "EXPANSION_FLOOR_BYTES",
    "ALLOWED_H5_FILTERS",
    "MESSAGE_REPR_CHARS",
    "READ_TIMEOUT_BASE_S",
    "READ_TIMEOUT_PER_GIB_S",
    "max_weights_bytes",
    "expansion_budget",
    "read_timeout_s",
    "read_isolation",
    "short_repr",
    "short_text",
]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# One JSON document: config.json, metadata.json, an architecture .json, the model_config attribute.
# The configs of large Keras models are a few MB; parsed, JSON takes up to ~30x its size in memory.
MAX_JSON_BYTES = 16 * MIB

# Nesting of lists and dicts in one JSON document. Each model nested as a layer adds about four
# levels (class_name/config/layers/[i]) and a layer config about six more, so 256 leaves room for
# MAX_MODEL_NESTING models while staying far below Python's recursion limit, which the JSON
# parser and the recursive walks over call arguments share.
MAX_JSON_DEPTH = 256

# Models used as layers inside models (a Functional inside a Sequential inside ...).
MAX_MODEL_NESTING = 32

# Characters of one layer or class name. Names appear in every message about their layer, and
# Keras names are short ("lstm_12"), so a longer one marks a crafted file.
MAX_NAME_CHARS = 1024

# One HDF5 attribute. model_config is the largest attribute Keras writes (the same JSON as above);
# layer_names / weight_names lists have one entry per layer or weight.
MAX_ATTRIBUTE_BYTES = MAX_JSON_BYTES
MAX_ATTRIBUTE_ELEMENTS = 1_000_000

# Links plus attributes visited in one HDF5 file, and how deep its groups may nest. A Keras model
# with 1,000 layers has about 10,000 objects; its groups nest about three levels per nested model.
MAX_H5_OBJECTS = 200_000
MAX_H5_DEPTH = 128

# Members of one zip archive (.keras, or the .npz weights inside one): Keras writes three, or one
# .npy per layer in the npz layout. (Without zip64 a zip can declare at most 65,535.)
MAX_ZIP_MEMBERS = 50_000

# The absolute bound on the bytes of all arrays read from one file (and on the decompressed size of
# one weights member of an archive). Overridden by TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES.
DEFAULT_MAX_WEIGHTS_BYTES = 4 * GIB

# Compression: data may expand beyond EXPANSION_FLOOR_BYTES only up to MAX_EXPANSION_RATIO times
# the bytes it is stored in. Keras stores weights uncompressed (ratio 1); trained float weights
# deflate by about 1.1x, so only crafted data (zip bombs, chunked HDF5 datasets with no stored
# chunks, lying zip headers) comes near the bound. Deflate alone reaches 1032:1, bzip2 far more.
MAX_EXPANSION_RATIO = 100
EXPANSION_FLOOR_BYTES = 64 * MIB

# HDF5 filters built into HDF5/h5py. Any other filter id would make HDF5 search its plugin
# directory and load a shared library, so it is refused. Keras itself writes no filters.
ALLOWED_H5_FILTERS: dict[int, str] = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
}

# Received values quoted in error messages are cut to this many characters, so a hostile file
# cannot make a message (or a list of messages) grow without bound.
MESSAGE_REPR_CHARS = 200

# The hang guard: seconds a file may take to read in the isolated reader before it is stopped.
# Reading a genuine file runs at disk speed (a 4 GiB file at >= 17 MB/s stays inside 255 s);
# corrupted HDF5 files can make HDF5 loop forever inside an attribute read.
READ_TIMEOUT_BASE_S = 15.0
READ_TIMEOUT_PER_GIB_S = 60.0


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise FileLimitError(f"Environment variable {name}={text!r} is not a number.") from None
    if value <= 0:
        raise FileLimitError(f"Environment variable {name}={text!r} must be positive.")
    return value


def max_weights_bytes() -> int:
    """The absolute bound on array bytes read from one file (env ``TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES``)."""
    return int(_env_number("TORCH_LSTM_PROBE_MAX_WEIGHTS_BYTES", DEFAULT_MAX_WEIGHTS_BYTES))


def expansion_budget(stored_bytes: int) -> int:
    """How many bytes data stored in ``stored_bytes`` bytes may expand to (see the module docstring)."""
    return min(max_weights_bytes(), max(EXPANSION_FLOOR_BYTES, MAX_EXPANSION_RATIO * max(0, int(stored_bytes))))


def read_timeout_s(file_bytes: int) -> float:
    """Seconds the isolated reader may take for a file of ``file_bytes`` (env ``TORCH_LSTM_PROBE_READ_TIMEOUT``)."""
    default = READ_TIMEOUT_BASE_S + READ_TIMEOUT_PER_GIB_S * max(0, file_bytes) / GIB
    return _env_number("TORCH_LSTM_PROBE_READ_TIMEOUT", default)


def read_isolation() -> str:
    """``"fork"`` (read each file in a forked child under the timeout) or ``"off"`` (read in-process).

    Forking is the default on Linux. Elsewhere (no ``fork``, or system libraries that do not
    survive it, as on macOS) files are read in the calling process unless the environment variable
    ``TORCH_LSTM_PROBE_READ_ISOLATION=fork`` asks for it.
    """
    default = "fork" if sys.platform.startswith("linux") and hasattr(os, "fork") else "off"
    value = os.environ.get("TORCH_LSTM_PROBE_READ_ISOLATION", default).strip().lower() or default
    if value not in ("fork", "off"):
        raise FileLimitError(
            f"Environment variable TORCH_LSTM_PROBE_READ_ISOLATION={value!r}: expected 'fork' or 'off'."
        )
    if value == "fork" and not hasattr(os, "fork"):
        return "off"
    return value


_REPR = reprlib.Repr()
_REPR.maxstring = MESSAGE_REPR_CHARS
_REPR.maxother = MESSAGE_REPR_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 4


def short_repr(value: Any, limit: int = MESSAGE_REPR_CHARS) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters, without building the
    full repr of a huge or deeply nested value first."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a repr that fails must not hide the error being reported
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def short_text(text: str, limit: int = MESSAGE_REPR_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters (for exception texts quoted in messages)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
