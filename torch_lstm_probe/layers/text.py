"""Runtime modules for Keras 3 text layers: ``TextVectorization`` and ``StringLookup`` in int mode.

Both take Python strings (a list, tuple or numpy array, not a tensor) and return an int64 tensor
of vocabulary ids, computed as Keras computes them:

* ``lower``: ASCII letters only (Keras 3 calls ``tf.strings.lower`` without an encoding, so
  ``"Ç"`` and ``"Ü"`` stay upper case);
* ``strip_punctuation``: removes the 32 ASCII punctuation characters, nothing else;
* ``whitespace`` split: runs of the ASCII whitespace characters `` \\t\\n\\v\\f\\r`` separate
  tokens (``"\\u00a0"`` and ``"\\u3000"`` do not); ``character`` split: one token per code point;
* ids: the mask token maps to 0, a known token to ``start + position``, any other token to the
  OOV index (with several OOV indices, to the one FarmHash's ``Fingerprint64`` picks, as
  ``tf.strings.to_hash_bucket_fast`` does).

The vocabulary lives in the config, so a saved model rebuilds without its Keras file.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin

__all__ = [
    "TextVectorization",
    "TextVectorizationConfig",
    "StringLookup",
    "StringLookupConfig",
    "as_string_array",
    "standardize_text",
    "split_text",
    "fingerprint64",
]

STANDARDIZE_MODES = (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")
SPLIT_MODES = (None, "whitespace", "character")

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ASCII_WHITESPACE = re.compile("[ \t\n\v\f\r]+")


def as_string_array(value: Any, what: str) -> np.ndarray:
    """``value`` (a str, or a list/tuple/numpy array of them, nested to any rank) as an object array of str.

    ``bytes`` and numpy bytes arrays are read as UTF-8. ``what`` names the receiver in errors.

    Raises:
        InputError: a tensor, a number, a ragged list, or text that is not valid Unicode.
    """
    if isinstance(value, torch.Tensor):
        raise InputError(
            f"{what} takes text. Received a tensor of dtype {value.dtype} and shape {tuple(value.shape)}. "
            "Expected a list, tuple or numpy array of Python strings, e.g. ['some text', ...]."
        )
    if isinstance(value, np.ndarray) and value.dtype.kind not in "USO":
        raise InputError(
            f"{what} takes text. Received a numpy array of dtype {value.dtype}. Expected a list, tuple or numpy "
            "array of Python strings, e.g. np.array(['some text', ...])."
        )
    try:
        array = np.array(value, dtype=object)
    except ValueError as err:
        raise InputError(
            f"{what} takes text: a list, tuple or numpy array of strings with the same length in every row. "
            f"Received a ragged {type(value).__name__} ({err})."
        ) from None
    flat = array.reshape(-1)
    for k, item in enumerate(flat):
        flat[k] = _as_text(item, what)
    return array


def _as_text(item: Any, what: str) -> str:
    """One element of a text input as a str that UTF-8 can encode."""
    if isinstance(item, (bytes, np.bytes_)):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{what} received bytes that are not UTF-8 ({err}). Expected UTF-8 text.") from None
    if not isinstance(item, str):
        raise InputError(
            f"{what} takes text. Received an element {_short(item)} of type {type(item).__name__}. "
            "Expected every element to be a Python string (a ragged list also reads as elements of type list)."
        )
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{what} received a string that is not valid Unicode ({err.reason} at index {err.start}). "
            "Expected text that UTF-8 can encode."
        ) from None
    return str(item)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def standardize_text(text: str, mode: str | None) -> str:
    """Keras 3's ``standardize``: ASCII lowercasing and/or removal of ASCII punctuation."""
    if mode in ("lower", "lower_and_strip_punctuation"):
        text = text.translate(_ASCII_LOWER)
    if mode in ("strip_punctuation", "lower_and_strip_punctuation"):
        text = text.translate(_NO_PUNCTUATION)
    return text


def split_text(text: str, mode: str) -> list[str]:
    """Keras 3's ``split``: on runs of ASCII whitespace (no empty tokens), or into code points."""
    if mode == "character":
        return list(text)
    return [token for token in _ASCII_WHITESPACE.split(text) if token]


class _Lookup(ConfigMixin, nn.Module):
    """Shared by both layers: the token → id table of a Keras ``StringLookup`` in int mode."""

    config: Any
    _device_anchor: torch.Tensor

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self._oov_start = 0 if config.mask_token is None else 1
        start = self._oov_start + config.num_oov_indices
        self._ids = {token: start + k for k, token in enumerate(config.vocabulary)}
        # Carries the model's device (int64, so a dtype change leaves it alone; not in the state_dict).
        self.register_buffer("_device_anchor", torch.zeros(0, dtype=torch.long), persistent=False)

    def _id(self, token: str) -> int:
        """The id of one token: 0 for the mask token, its table entry, or an OOV id."""
        if token == self.config.mask_token:
            return 0
        known = self._ids.get(token)
        if known is not None:
            return known
        buckets = self.config.num_oov_indices
        if buckets == 0:
            raise InputError(
                f"{self.describe()} has num_oov_indices=0 and received the unknown token {_short(token)}. "
                "Keras raises on it too. Expected only tokens of the vocabulary; Fix: set num_oov_indices=1 in Keras."
            )
        if buckets == 1:
            return self._oov_start
        return self._oov_start + fingerprint64(token.encode("utf-8")) % buckets

    def _tensor(self, ids: Sequence[Any] | np.ndarray) -> torch.Tensor:
        """``ids`` as an int64 tensor on the module's device."""
        return torch.as_tensor(np.asarray(ids, dtype=np.int64)).to(self._device_anchor.device)


@dataclass(frozen=True)
class StringLookupConfig:
    vocabulary: tuple[str, ...]  # the tokens, without the mask and OOV tokens
    num_oov_indices: int = 1  # unknown tokens hash into this many ids (0: an unknown token is an error)
    mask_token: str | None = None  # maps to id 0 when set


@register_module("StringLookup")
class StringLookup(_Lookup):
    """Keras ``StringLookup(output_mode="int")``: strings of any shape → int64 ids of that shape.

    Ids: ``0`` for ``mask_token`` (when set), ``m + num_oov_indices + position`` for a known token
    (``m = 1`` with a mask token, else 0), ``m + fingerprint64(token) % num_oov_indices`` for an
    unknown one (FarmHash, as TensorFlow's ``to_hash_bucket_fast``).
    """

    Config = StringLookupConfig

    def forward(self, x: Any) -> torch.Tensor:
        array = as_string_array(x, self.describe())
        ids = np.fromiter((self._id(t) for t in array.reshape(-1)), dtype=np.int64, count=array.size)
        return self._tensor(ids.reshape(array.shape))


@dataclass(frozen=True)
class TextVectorizationConfig:
    vocabulary: tuple[str, ...]  # the tokens, without the mask ("") and OOV tokens
    standardize: str | None = "lower_and_strip_punctuation"
    split: str | None = "whitespace"
    output_sequence_length: int | None = None  # pad with 0 / truncate each row to this length
    num_oov_indices: int = 1
    mask_token: str | None = ""

    def __post_init__(self) -> None:
        if self.standardize not in STANDARDIZE_MODES or self.split not in SPLIT_MODES:
            raise ValueError(
                f"TextVectorizationConfig: standardize={self.standardize!r}, split={self.split!r}. "
                f"Expected standardize in {STANDARDIZE_MODES} and split in {SPLIT_MODES}."
            )


@register_module("TextVectorization")
class TextVectorization(_Lookup):
    """Keras ``TextVectorization(output_mode="int")``: texts ``(N,)`` or ``(N, 1)`` → int64 ids ``(N, L)``.

    With a ``split``, ``L`` is ``output_sequence_length`` (rows padded with 0 or truncated), or the
    longest row when it is None. Without one, each string is one token: ids keep the input's shape,
    and ``output_sequence_length`` pads or truncates its last axis.
    """

    Config = TextVectorizationConfig

    def forward(self, x: Any) -> torch.Tensor:
        array = as_string_array(x, self.describe())
        cfg = self.config
        if cfg.split is None:
            return self._tensor(self._fit_length(self._lookup_each(array)))
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InputError(
                f"{self.describe()} splits text, so it takes shape (batch,) or (batch, 1). Received shape "
                f"{array.shape}. Fix: feed one string per example."
            )
        rows = [[self._id(t) for t in split_text(standardize_text(text, cfg.standardize), cfg.split)] for text in array]
        length = cfg.output_sequence_length
        if length is None:
            length = max((len(row) for row in rows), default=0)
        ids = np.zeros((len(rows), length), dtype=np.int64)
        for k, row in enumerate(rows):
            row = row[:length]
            ids[k, : len(row)] = row
        return self._tensor(ids)

    def _lookup_each(self, array: np.ndarray) -> np.ndarray:
        """Ids of each whole (standardized) string, in the input's shape."""
        mode = self.config.standardize
        flat = (self._id(standardize_text(t, mode)) for t in array.reshape(-1))
        return np.fromiter(flat, dtype=np.int64, count=array.size).reshape(array.shape)

    def _fit_length(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` with its last axis truncated or padded with 0 to ``output_sequence_length``."""
        length = self.config.output_sequence_length
        if length is None:
            return ids
        if ids.ndim < 2:
            raise InputError(
                f"{self.describe()} has split=None and output_sequence_length={length}, so it takes shape "
                f"(batch, n). Received shape {ids.shape}. Fix: feed an array of shape (batch, 1)."
            )
        ids = ids[..., :length]
        pad = [(0, 0)] * (ids.ndim - 1) + [(0, length - ids.shape[-1])]
        return np.pad(ids, pad)


# ---------------------------------------------------------------------------- FarmHash Fingerprint64
# Keras spreads unknown strings over several OOV indices with tf.strings.to_hash_bucket_fast:
# FarmHash's Fingerprint64 of the UTF-8 bytes, modulo the number of OOV indices. The functions
# below compute it with Python ints masked to 64 bits; names follow FarmHash's ``farmhashna``.

_M = (1 << 64) - 1
_K0, _K1, _K2 = 0xC3A5C85C97CB3127, 0xB492B66FBE98F273, 0x9AE16A3B2F90404F


def _rot(v: int, s: int) -> int:
    """Rotates the 64-bit ``v`` right by ``s`` bits."""
    return v if s == 0 else ((v >> s) | (v << (64 - s))) & _M


def _f64(b: bytes, i: int) -> int:
    """The little-endian 64-bit word at ``b[i:]``."""
    return int.from_bytes(b[i : i + 8], "little")


def _f32(b: bytes, i: int) -> int:
    """The little-endian 32-bit word at ``b[i:]``."""
    return int.from_bytes(b[i : i + 4], "little")


def _smix(v: int) -> int:
    """FarmHash ``ShiftMix``."""
    return v ^ (v >> 47)


def _len16(u: int, v: int, mul: int) -> int:
    """FarmHash ``HashLen16``: mixes two words."""
    a = ((u ^ v) * mul) & _M
    a ^= a >> 47
    b = ((v ^ a) * mul) & _M
    b ^= b >> 47
    return (b * mul) & _M


def _0to16(s: bytes, n: int) -> int:
    """FarmHash ``HashLen0to16``."""
    if n >= 8:
        mul = _K2 + n * 2
        a = (_f64(s, 0) + _K2) & _M
        b = _f64(s, n - 8)
        c = (_rot(b, 37) * mul + a) & _M
        d = ((_rot(a, 25) + b) * mul) & _M
        return _len16(c, d, mul)
    if n >= 4:
        mul = _K2 + n * 2
        a = _f32(s, 0)
        return _len16(n + (a << 3), _f32(s, n - 4), mul)
    if n > 0:
        y = s[0] + (s[n >> 1] << 8)
        z = n + (s[n - 1] << 2)
        return (_smix(((y * _K2) ^ (z * _K0)) & _M) * _K2) & _M
    return _K2


def _17to32(s: bytes, n: int) -> int:
    """FarmHash ``HashLen17to32``."""
    mul = _K2 + n * 2
    a = (_f64(s, 0) * _K1) & _M
    b = _f64(s, 8)
    c = (_f64(s, n - 8) * mul) & _M
    d = (_f64(s, n - 16) * _K2) & _M
    return _len16((_rot((a + b) & _M, 43) + _rot(c, 30) + d) & _M, (a + _rot((b + _K2) & _M, 18) + c) & _M, mul)


def _33to64(s: bytes, n: int) -> int:
    """FarmHash ``HashLen33to64``."""
    mul = _K2 + n * 2
    a = (_f64(s, 0) * _K2) & _M
    b = _f64(s, 8)
    c = (_f64(s, n - 8) * mul) & _M
    d = (_f64(s, n - 16) * _K2) & _M
    y = (_rot((a + b) & _M, 43) + _rot(c, 30) + d) & _M
    z = _len16(y, (a + _rot((b + _K2) & _M, 18) + c) & _M, mul)
    e = (_f64(s, 16) * mul) & _M
    f = _f64(s, 24)
    g = ((y + _f64(s, n - 32)) * mul) & _M
    h = ((z + _f64(s, n - 24)) * mul) & _M
    return _len16((_rot((e + f) & _M, 43) + _rot(g, 30) + h) & _M, (e + _rot((f + a) & _M, 18) + g) & _M, mul)


def _weak32(s: bytes, i: int, a: int, b: int) -> tuple[int, int]:
    """FarmHash ``WeakHashLen32WithSeeds`` over the 32 bytes at ``s[i:]``."""
    w, x, y, z = _f64(s, i), _f64(s, i + 8), _f64(s, i + 16), _f64(s, i + 24)
    a = (a + w) & _M
    b = _rot((b + a + z) & _M, 21)
    c = a
    a = (a + x + y) & _M
    b = (b + _rot(a, 44)) & _M
    return (a + z) & _M, (b + c) & _M


def fingerprint64(s: bytes) -> int:
    """FarmHash ``Fingerprint64`` of ``s``, as TensorFlow's ``to_hash_bucket_fast`` computes it."""
    n = len(s)
    if n <= 16:
        return _0to16(s, n)
    if n <= 32:
        return _17to32(s, n)
    if n <= 64:
        return _33to64(s, n)
    seed = 81
    x = seed
    y = (seed * _K1 + 113) & _M
    z = (_smix((y * _K2 + 113) & _M) * _K2) & _M
    v = (0, 0)
    w = (0, 0)
    x = (x * _K2 + _f64(s, 0)) & _M
    end = ((n - 1) // 64) * 64
    last64 = end + ((n - 1) & 63) - 63
    i = 0
    while True:
        x = (_rot((x + y + v[0] + _f64(s, i + 8)) & _M, 37) * _K1) & _M
        y = (_rot((y + v[1] + _f64(s, i + 48)) & _M, 42) * _K1) & _M
        x ^= w[1]
        y = (y + v[0] + _f64(s, i + 40)) & _M
        z = (_rot((z + w[0]) & _M, 33) * _K1) & _M
        v = _weak32(s, i, (v[1] * _K1) & _M, (x + w[0]) & _M)
        w = _weak32(s, i + 32, (z + w[1]) & _M, (y + _f64(s, i + 16)) & _M)
        z, x = x, z
        i += 64
        if i == end:
            break
    mul = _K1 + ((z & 0xFF) << 1)
    i = last64
    w0 = (w[0] + ((n - 1) & 63)) & _M
    v0 = (v[0] + w0) & _M
    w0 = (w0 + v0) & _M
    v, w = (v0, v[1]), (w0, w[1])
    x = (_rot((x + y + v[0] + _f64(s, i + 8)) & _M, 37) * mul) & _M
    y = (_rot((y + v[1] + _f64(s, i + 48)) & _M, 42) * mul) & _M
    x ^= (w[1] * 9) & _M
    y = (y + v[0] * 9 + _f64(s, i + 40)) & _M
    z = (_rot((z + w[0]) & _M, 33) * mul) & _M
    v = _weak32(s, i, (v[1] * mul) & _M, (x + w[0]) & _M)
    w = _weak32(s, i + 32, (z + w[1]) & _M, (y + _f64(s, i + 16)) & _M)
    z, x = x, z
    return _len16((_len16(v[0], w[0], mul) + _smix(y) * _K0 + z) & _M, (_len16(v[1], w[1], mul) + x) & _M, mul)
