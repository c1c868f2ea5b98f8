"""Keras numeric preprocessing layers at inference: Rescaling, Normalization, CategoryEncoding,
ActivityRegularization, the integer IntegerLookup, Discretization and Hashing (unsalted, int mode).

All but CategoryEncoding (and Discretization in its encoding modes) keep the input's layout.
ActivityRegularization passes a mask on; Rescaling and Normalization pass it in Keras 3 and drop it
in Keras 2 / tf_keras (whose layers do not support masking, so the layers after them see none);
CategoryEncoding, IntegerLookup, Discretization and Hashing drop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..registry import build_module, module_type_name, register_module
from ..tracing import is_tracing
from .base import ConfigMixin
from .text import as_string_array, fingerprint64

__all__ = [
    "Rescaling",
    "RescalingConfig",
    "Normalization",
    "NormalizationConfig",
    "CategoryEncoding",
    "CategoryEncodingConfig",
    "ActivityRegularization",
    "ActivityRegularizationConfig",
    "IntegerLookup",
    "IntegerLookupConfig",
    "Discretization",
    "DiscretizationConfig",
    "Hashing",
    "HashingConfig",
    "Pipeline",
    "PipelineConfig",
    "HashedCrossing",
    "HashedCrossingConfig",
    "fingerprint_cat64",
    "encode_ids",
]


def _as_float(layer: ConfigMixin, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` cast to the layer's float dtype, as Keras casts any real input to its compute dtype."""
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"{layer.describe()} expects real numbers. Received dtype {x.dtype}.")
    return x if x.is_floating_point() else x.to(dtype)


def _broadcast(layer: ConfigMixin, value: torch.Tensor, what: str, x: torch.Tensor) -> None:
    """Raises InputError unless ``value`` broadcasts against ``x`` without changing ``x``'s shape."""
    try:
        shape = torch.broadcast_shapes(value.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise InputError(
            f"{layer.describe()} has {what} of shape {tuple(value.shape)}, which does not broadcast to an input "
            f"of shape {tuple(x.shape)} (axes align from the last). Fix: feed inputs whose last axes match "
            f"{tuple(value.shape)}."
        )


# ---------------------------------------------------------------------------- Rescaling


@dataclass(frozen=True)
class RescalingConfig:
    scale_shape: tuple[int, ...] = ()  # shape of Keras `scale`: () for a scalar, (C,) per channel
    offset_shape: tuple[int, ...] = ()  # shape of Keras `offset`
    keep_mask: bool = True  # Keras 3 passes a mask on; Keras 2 / tf_keras drop it


@register_module("Rescaling")
class Rescaling(ConfigMixin, nn.Module):
    """Keras ``Rescaling``: ``y = float(x) * scale + offset``.

    Buffers ``scale`` and ``offset`` hold the Keras values cast to float32 (as Keras casts them to
    its compute dtype); they broadcast numpy-style from the last axis (channels last). A mask
    passes on when ``keep_mask`` (Keras 3). Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = RescalingConfig
    scale: torch.Tensor  # a registered buffer
    offset: torch.Tensor  # a registered buffer
    mask_mode = "custom"

    def __init__(self, config: RescalingConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("scale", torch.ones(config.scale_shape))
        self.register_buffer("offset", torch.zeros(config.offset_shape))

    def compute_mask(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor | None:
        return mask if self.config.keep_mask else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(self, x, self.scale.dtype)
        _broadcast(self, self.scale, "scale", x)
        _broadcast(self, self.offset, "offset", x)
        return x * self.scale + self.offset  # (N, *)

    def extra_repr(self) -> str:
        return f"scale_shape={self.config.scale_shape}, offset_shape={self.config.offset_shape}"


# ---------------------------------------------------------------------------- Normalization


@dataclass(frozen=True)
class NormalizationConfig:
    axes: tuple[int, ...]  # Keras `axis` (None becomes ()): the kept axes; negative counts from the end
    stats_shape: tuple[int, ...]  # shape of the stored mean/variance (numpy-broadcast to the kept axes' sizes)
    invert: bool = False  # Keras `invert`: y = mean + x * max(sqrt(var), eps)
    epsilon: float = 1e-7  # keras.backend.epsilon(), the floor of the standard deviation
    keep_mask: bool = True  # Keras 3 passes a mask on; Keras 2 / tf_keras drop it


@register_module("Normalization")
class Normalization(ConfigMixin, nn.Module):
    """Keras ``Normalization`` as Keras 3 and tf_keras compute it:

    ``std = max(sqrt(variance), epsilon)``; ``y = (x - mean) / std``, or with ``invert``
    ``y = mean + x * std``; ``epsilon`` is ``keras.backend.epsilon()`` (1e-7).

    Buffers ``mean`` and ``variance`` have ``stats_shape``: the sizes of the kept axes (adapted
    weights) or the shape given in the config (a scalar or trailing sizes). At each call they are
    broadcast numpy-style (aligned from the right) to the sizes of the kept axes, sorted, and
    reshaped to the input's rank with 1 on the reduced axes. A mask passes on when ``keep_mask``
    (Keras 3). Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = NormalizationConfig
    mean: torch.Tensor  # a registered buffer
    variance: torch.Tensor  # a registered buffer
    mask_mode = "custom"

    def __init__(self, config: NormalizationConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.stats_shape))
        self.register_buffer("variance", torch.ones(config.stats_shape))

    def _kept(self, x: torch.Tensor) -> list[int]:
        """The kept axes as sorted positions in ``x``; raises InputError for an axis ``x`` lacks."""
        rank = x.dim()
        if any(not -rank <= a < rank for a in self.config.axes):
            raise InputError(
                f"{self.describe()} keeps axes {list(self.config.axes)}, which do not exist in an input of shape "
                f"{tuple(x.shape)}. Fix: feed inputs of the rank the model was built for."
            )
        return sorted(a % rank for a in self.config.axes)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``variance`` in the input's broadcast shape (kept axes' sizes, 1 elsewhere)."""
        kept = self._kept(x)
        sizes = torch.Size(x.shape[k] for k in kept)
        try:
            fits = torch.broadcast_shapes(self.mean.shape, sizes) == sizes
        except RuntimeError:
            fits = False
        if not fits:
            raise InputError(
                f"{self.describe()} has mean and variance of shape {tuple(self.mean.shape)} for the kept axes "
                f"{list(self.config.axes)}. Received an input of shape {tuple(x.shape)}, whose kept axes have sizes "
                f"{tuple(sizes)}. Fix: feed inputs of the shape the layer was adapted to."
            )
        shape = [x.shape[d] if d in kept else 1 for d in range(x.dim())]
        mean = self.mean.broadcast_to(sizes).reshape(shape)  # (1.., kept sizes, ..1)
        variance = self.variance.broadcast_to(sizes).reshape(shape)
        return mean, variance

    def compute_mask(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor | None:
        return mask if self.config.keep_mask else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(self, x, self.mean.dtype)
        mean, variance = self._stats(x)
        std = torch.clamp_min(torch.sqrt(variance), self.config.epsilon)
        if self.config.invert:
            return mean + x * std  # (N, *)
        return (x - mean) / std  # (N, *)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"axes={cfg.axes}, stats_shape={cfg.stats_shape}, invert={cfg.invert}, epsilon={cfg.epsilon}"


# ---------------------------------------------------------------------------- CategoryEncoding


def _integer_ids(layer: ConfigMixin, x: torch.Tensor) -> torch.Tensor:
    """``x`` as int64 ids; a float input must hold whole numbers (checked in eager mode)."""
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"{layer.describe()} expects integer ids. Received dtype {x.dtype}.")
    if not x.is_floating_point():
        return x.long()
    if not is_tracing() and x.numel() and not bool((torch.isfinite(x) & (x == x.trunc())).all()):
        raise InputError(
            f"{layer.describe()} expects integer ids. Received floats that are not whole numbers (or NaN/inf). "
            "Fix: feed an integer tensor."
        )
    return x.long()


def encode_ids(layer: ConfigMixin, ids: torch.Tensor, num_tokens: int, mode: str, dtype: torch.dtype) -> torch.Tensor:
    """Keras' ``encode_categorical_inputs`` on int64 ``ids`` in ``[0, num_tokens)``, in ``dtype``.

    With ``onehot(i)[t] = (i == t)``: ``one_hot`` drops a trailing axis of size 1 (rank above 1)
    and maps each id to a row, ``(B, ..., k)`` → ``(B, ..., k, N)``; ``multi_hot``
    ``y[b, t] = max_j onehot(x[b, j])[t]`` and ``count`` ``y[b, t] = sum_j onehot(x[b, j])[t]`` take
    ``(B, k)`` → ``(B, N)`` or ``(k,)`` → ``(N,)``.
    """
    tokens = torch.arange(num_tokens, device=ids.device)  # (N,)
    if mode == "one_hot":
        if ids.dim() > 1 and ids.shape[-1] == 1:
            ids = ids.squeeze(-1)  # (B, ..., 1) -> (B, ...)
        return (ids.unsqueeze(-1) == tokens).to(dtype)  # (B, ..., N)
    if ids.dim() not in (1, 2):
        raise InputError(
            f"{layer.describe()} with output_mode {mode!r} takes ids of shape (batch, k) or (k,). Received shape "
            f"{tuple(ids.shape)}. Fix: reshape the ids to rank 2."
        )
    hot = (ids.unsqueeze(-1) == tokens).to(dtype)  # (B, k, N) or (k, N)
    if mode == "count":
        return hot.sum(dim=-2)  # (B, N) or (N,)
    return hot.amax(dim=-2) if ids.shape[-1] else hot.sum(dim=-2)  # (B, N) or (N,)


@dataclass(frozen=True)
class CategoryEncodingConfig:
    num_tokens: int  # Keras `num_tokens`: ids lie in [0, num_tokens)
    output_mode: str = "multi_hot"  # "one_hot", "multi_hot" ("binary") or "count"


@register_module("CategoryEncoding")
class CategoryEncoding(ConfigMixin, nn.Module):
    """Keras ``CategoryEncoding``: integer ids → one-hot rows, presence or counts, in the model's float dtype.

    With ``N = num_tokens`` and ``onehot(i)[t] = (i == t)``:

    * ``one_hot``: a trailing axis of size 1 is dropped (when the rank is above 1), then each id
      becomes a row: ``(B,)`` → ``(B, N)``, ``(B, 1)`` → ``(B, N)``, ``(B, k)`` → ``(B, k, N)``
      (Keras 3; tf_keras refuses to build that last case).
    * ``multi_hot``: ``y[b, t] = max_j onehot(x[b, j])[t]``; ``count``: ``y[b, t] = sum_j onehot(x[b, j])[t]``.
      ``(B, k)`` → ``(B, N)``. A rank-1 input ``(B,)`` is *one* sample in both libraries:
      ``(B,)`` → ``(N,)``, with no batch axis.

    Ids outside ``[0, N)`` raise :class:`InputError` in eager mode (tf_keras asserts the range;
    Keras 3 gives a zero one-hot row, drops too-large ids from multi_hot/count and fails on
    negative ones). Under tracing, where values are not read, an out-of-range id counts nowhere.
    """

    Config = CategoryEncodingConfig
    dtype_anchor: torch.Tensor  # a registered buffer
    takes_indices = True

    def __init__(self, config: CategoryEncodingConfig) -> None:
        super().__init__()
        if config.output_mode not in ("one_hot", "multi_hot", "count"):
            raise ValueError(
                f"CategoryEncoding output_mode must be one_hot, multi_hot or count; got {config.output_mode!r}."
            )
        self.config = config
        # Empty and not saved: follows model.to(dtype=...) so the output takes the model's float dtype.
        self.register_buffer("dtype_anchor", torch.zeros(0), persistent=False)

    def _check_range(self, ids: torch.Tensor) -> None:
        n = self.config.num_tokens
        if is_tracing() or not ids.numel():
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= n:
            raise InputError(
                f"{self.describe()} has num_tokens {n}: ids must lie in [0, {n - 1}]. Received ids from {lo} to "
                f"{hi}. Fix: map ids into range (e.g. with IntegerLookup) or raise num_tokens."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = _integer_ids(self, x)
        self._check_range(ids)
        return encode_ids(self, ids, self.config.num_tokens, self.config.output_mode, self.dtype_anchor.dtype)

    def extra_repr(self) -> str:
        return f"num_tokens={self.config.num_tokens}, output_mode={self.config.output_mode!r}"


# ---------------------------------------------------------------------------- ActivityRegularization


@dataclass(frozen=True)
class ActivityRegularizationConfig:
    l1: float = 0.0  # Keras `l1`: a training loss only
    l2: float = 0.0  # Keras `l2`: a training loss only


@register_module("ActivityRegularization")
class ActivityRegularization(ConfigMixin, nn.Module):
    """Keras ``ActivityRegularization`` at inference: the identity (its penalty is a training
    loss). It passes the mask on. Shapes: ``(N, *)`` → ``(N, *)``."""

    Config = ActivityRegularizationConfig
    mask_mode = "pass"

    def __init__(self, config: ActivityRegularizationConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"l1={self.config.l1}, l2={self.config.l2} (identity at inference)"


# ---------------------------------------------------------------------------- IntegerLookup


@dataclass(frozen=True)
class IntegerLookupConfig:
    vocabulary: tuple[int, ...]  # the tokens, without the mask and OOV entries, in index order
    num_oov_indices: int = 1  # Keras `num_oov_indices`: OOV ids hash into this many indices
    mask_token: int | None = None  # Keras `mask_token`: maps to index 0 and shifts every other index by 1


@register_module("IntegerLookup")
class IntegerLookup(ConfigMixin, nn.Module):
    """Keras ``IntegerLookup`` with ``output_mode="int"``: token ids → vocabulary indices (int64).

    With ``m = 1`` if ``mask_token`` is set else ``0`` and ``k = num_oov_indices``:
    ``vocabulary[i] → m + k + i``; ``mask_token → 0``; a token not in the vocabulary →
    ``m + floormod(token, k)`` (``m`` when ``k == 1``). With ``k == 0`` an unknown token raises
    :class:`InputError` in eager mode, as Keras asserts; under tracing it maps to ``-1`` as
    Keras' table does before its assertion. Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = IntegerLookupConfig
    sorted_tokens: torch.Tensor  # a registered buffer
    sorted_indices: torch.Tensor  # a registered buffer
    takes_indices = True

    def __init__(self, config: IntegerLookupConfig) -> None:
        super().__init__()
        if not config.vocabulary:
            raise ValueError("IntegerLookup needs a non-empty vocabulary.")
        self.config = config
        tokens = torch.tensor(config.vocabulary, dtype=torch.long)  # (V,)
        keys, order = torch.sort(tokens)
        start = self._oov_start() + config.num_oov_indices
        # Rebuilt from the config, so not saved; integer buffers keep their dtype under model.to(dtype).
        self.register_buffer("sorted_tokens", keys, persistent=False)  # (V,)
        self.register_buffer("sorted_indices", order + start, persistent=False)  # (V,)

    def _oov_start(self) -> int:
        return 0 if self.config.mask_token is None else 1

    def _check_known(self, ids: torch.Tensor, found: torch.Tensor) -> None:
        if self.config.num_oov_indices or is_tracing() or bool(found.all()):
            return
        unknown = torch.unique(ids[~found])[:10].tolist()
        raise InputError(
            f"{self.describe()} has num_oov_indices 0, so every input must be in its vocabulary of "
            f"{len(self.config.vocabulary)} tokens. Received unknown tokens {unknown}. Fix: map them to known tokens, "
            "or rebuild the layer with num_oov_indices=1."
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        ids = _integer_ids(self, x)  # (N, *)
        pos = torch.searchsorted(self.sorted_tokens, ids).clamp(max=len(cfg.vocabulary) - 1)  # (N, *)
        found = self.sorted_tokens[pos] == ids  # (N, *)
        self._check_known(ids, found)
        if cfg.num_oov_indices == 0:
            oov = torch.full_like(ids, -1)
        else:
            oov = torch.remainder(ids, cfg.num_oov_indices) + self._oov_start()  # floormod
        out = torch.where(found, self.sorted_indices[pos], oov)  # (N, *)
        if cfg.mask_token is not None:
            out = torch.where(ids == cfg.mask_token, torch.zeros_like(out), out)
        return out

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"vocabulary_size={len(cfg.vocabulary)}, num_oov_indices={cfg.num_oov_indices}, mask_token={cfg.mask_token}"
        )


# ---------------------------------------------------------------------------- Discretization


@dataclass(frozen=True)
class DiscretizationConfig:
    bin_boundaries: tuple[float, ...]  # sorted boundaries, float32 values (given, or adapted)
    output_mode: str = "int"  # "int", "one_hot", "multi_hot" or "count"


@register_module("Discretization")
class Discretization(ConfigMixin, nn.Module):
    """Keras ``Discretization``: ``index(x) = #{i : boundaries[i] <= x}`` (TensorFlow's
    ``Bucketize``, numpy's ``digitize``), so ``x < b[0]`` → 0, ``b[i-1] <= x < b[i]`` → ``i``,
    ``x >= b[-1]`` → ``len(b)``; NaN → ``len(b)``.

    The input is compared in float32 (an integer input is cast, as TensorFlow compares it with
    float boundaries). ``int`` gives int64 indices of the input's shape; ``one_hot``,
    ``multi_hot`` and ``count`` encode them with ``len(b) + 1`` tokens as :func:`encode_ids`, in
    the model's float dtype. It drops a mask.
    """

    Config = DiscretizationConfig
    dtype_anchor: torch.Tensor  # a registered buffer

    def __init__(self, config: DiscretizationConfig) -> None:
        super().__init__()
        if config.output_mode not in ("int", "one_hot", "multi_hot", "count"):
            raise ValueError(
                f"Discretization output_mode must be int, one_hot, multi_hot or count; got {config.output_mode!r}."
            )
        self.config = config
        self.register_buffer("dtype_anchor", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bool or x.is_complex():
            raise InputError(f"{self.describe()} expects real numbers. Received dtype {x.dtype}.")
        # float64 holds the float32 values and boundaries exactly, whatever dtype the model was cast to.
        boundaries = torch.tensor(self.config.bin_boundaries, dtype=torch.float64, device=x.device)  # (B,)
        values = x.to(torch.float32).to(torch.float64)  # (N, *)
        ids = torch.bucketize(values, boundaries, right=True)  # (N, *) count of boundaries <= x
        ids = torch.where(torch.isnan(values), torch.full_like(ids, len(self.config.bin_boundaries)), ids)
        if self.config.output_mode == "int":
            return ids
        return encode_ids(
            self, ids, len(self.config.bin_boundaries) + 1, self.config.output_mode, self.dtype_anchor.dtype
        )

    def extra_repr(self) -> str:
        return f"bins={len(self.config.bin_boundaries) + 1}, output_mode={self.config.output_mode!r}"


# ---------------------------------------------------------------------------- Hashing


@dataclass(frozen=True)
class HashingConfig:
    num_bins: int  # Keras `num_bins`, the mask bin included
    mask_value: str | int | None = None  # Keras `mask_value`: maps to bin 0 and shifts the others by 1
    cast_floats: bool = True  # Keras 3 truncates float inputs to int64 before hashing; tf_keras refuses floats


@register_module("Hashing")
class Hashing(ConfigMixin, nn.Module):
    """Keras ``Hashing`` without a salt, ``output_mode="int"``: values → int64 bins of the same shape.

    Each value is hashed as a string ``s``: a string as its UTF-8 bytes, an integer as its decimal
    form (``tf.as_string``), a float (Keras 3) as the decimal form of ``trunc(x)`` as int64. With
    ``h = fingerprint64(s)`` (FarmHash, TensorFlow's ``to_hash_bucket_fast``):
    ``bin = h mod num_bins``; with a ``mask_value``, ``bin = 0`` where ``x == mask_value`` and
    ``1 + (h mod (num_bins - 1))`` elsewhere (when ``num_bins > 1``). Takes strings (a list or
    numpy array) or an integer tensor. It drops a mask.
    """

    Config = HashingConfig
    takes_indices = True
    _device_anchor: torch.Tensor

    def __init__(self, config: HashingConfig) -> None:
        super().__init__()
        if config.num_bins < 1:
            raise ValueError(f"Hashing num_bins must be positive; got {config.num_bins}.")
        self.config = config
        self.register_buffer("_device_anchor", torch.zeros(0, dtype=torch.long), persistent=False)

    def _values(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """The strings to hash and the values compared with ``mask_value``, both as object arrays."""
        if isinstance(x, torch.Tensor) or (isinstance(x, np.ndarray) and x.dtype.kind in "biuf"):
            array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
            if array.dtype.kind == "b" or (array.dtype.kind == "f" and not self.config.cast_floats):
                raise InputError(f"{self.describe()} hashes strings or integers. Received dtype {array.dtype}.")
            if array.dtype.kind == "f":
                if not np.isfinite(array).all():
                    raise InputError(f"{self.describe()} received NaN or infinite values, which have no int64 value.")
                ints = np.trunc(array).astype(np.int64)
            else:
                ints = array  # tf.as_string prints each integer in its own dtype's decimal form
            return np.vectorize(str, otypes=[object])(ints), array.astype(object)
        array = as_string_array(x, self.describe())
        return array, array

    def forward(self, x: Any) -> torch.Tensor:
        cfg = self.config
        texts, raw = self._values(x)
        masked = cfg.mask_value is not None and cfg.num_bins > 1
        bins = cfg.num_bins - 1 if masked else cfg.num_bins
        flat = texts.reshape(-1)
        ids = np.fromiter((fingerprint64(t.encode("utf-8")) % bins for t in flat), dtype=np.int64, count=flat.size)
        ids = ids.reshape(texts.shape)
        if masked:
            ids = np.where(raw == cfg.mask_value, 0, ids + 1)
        return torch.as_tensor(np.asarray(ids, dtype=np.int64)).to(self._device_anchor.device)

    def extra_repr(self) -> str:
        return f"num_bins={self.config.num_bins}, mask_value={self.config.mask_value!r}"


# ---------------------------------------------------------------------------- Pipeline


@dataclass(frozen=True)
class PipelineConfig:
    layers: tuple[dict[str, Any], ...]  # each {"type": runtime module type, "config": its config}


@register_module("Pipeline")
class Pipeline(ConfigMixin, nn.Module):
    """Keras 3 ``Pipeline([f_1, ..., f_k])``: ``y = f_k(... f_2(f_1(x)))``, each inner layer seeing the
    mask the one before it produced, as Keras passes it (a layer that does not support masking
    stops it). The inner modules sit in ``layers`` (state_dict keys ``layers.<i>.<name>``).
    """

    Config = PipelineConfig
    mask_mode = "custom"
    takes_mask = True

    def __init__(self, config: PipelineConfig, layers: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.config = config
        if layers is None:
            layers = nn.ModuleList(build_module(item["type"], item["config"]) for item in config.layers)
        self.layers = layers
        self.takes_indices = bool(len(layers) and getattr(layers[0], "takes_indices", False))  # type: ignore[misc]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        return cls(PipelineConfig(layers=tuple(dict(item) for item in config["layers"])))

    def get_config(self) -> dict[str, Any]:
        items = []
        for module in self.layers:
            type_name = module_type_name(module)
            if type_name is None:
                raise TypeError(f"Pipeline holds a foreign module {type(module).__name__}; it has no config.")
            items.append({"type": type_name, "config": module.get_config()})  # type: ignore[operator]
        return {"layers": items}

    def _run(self, x: Any, mask: torch.Tensor | None) -> tuple[Any, torch.Tensor | None]:
        for module in self.layers:
            kwargs = {"mask": mask} if mask is not None and getattr(module, "takes_mask", False) else {}
            out = module(x, **kwargs)
            mode = getattr(module, "mask_mode", "drop")
            if mode == "custom":
                mask = module.compute_mask(x, mask=mask)  # type: ignore[operator]
            elif mode != "pass":
                mask = None
            x = out
        return x, mask

    def compute_mask(self, x: Any, mask: torch.Tensor | None = None) -> torch.Tensor | None:
        return None if mask is None else self._run(x, mask)[1]

    def forward(self, x: Any, mask: torch.Tensor | None = None) -> Any:
        return self._run(x, mask)[0]


# ---------------------------------------------------------------------------- HashedCrossing

_U64 = (1 << 64) - 1
_CAT_MUL = 0xC6A4A7935BD1E995  # FarmHash's 64-bit multiplier
CROSS_HASH_KEY = 0xDECAFCAFFE  # TensorFlow's default hash_key of sparse.cross_hashed


def _shift_mix(value: int) -> int:
    return value ^ (value >> 47)


def fingerprint_cat64(first: int, second: int) -> int:
    """FarmHash ``FingerprintCat64(a, b)`` on unsigned 64-bit integers, with ``m = 0xc6a4a7935bd1e995``,
    ``mix(v) = v xor (v >> 47)`` and every product taken mod ``2**64``:
    ``r = a xor m``; ``r = r xor (mix(b*m) * m)``; ``r = r * m``; ``r = mix(r) * m``; result ``mix(r)``."""
    result = first ^ _CAT_MUL
    result ^= (_shift_mix((second * _CAT_MUL) & _U64) * _CAT_MUL) & _U64
    result = (result * _CAT_MUL) & _U64
    result = (_shift_mix(result) * _CAT_MUL) & _U64
    return _shift_mix(result)


@dataclass(frozen=True)
class HashedCrossingConfig:
    num_bins: int  # Keras `num_bins`
    output_mode: str = "int"  # "int" (int64 bins) or "one_hot"


@register_module("HashedCrossing")
class HashedCrossing(ConfigMixin, nn.Module):
    """Keras ``HashedCrossing``: the bin of each row's combination of features, as TensorFlow's
    ``sparse.cross_hashed`` computes it.

    Each feature value ``v`` hashes to ``h(v)``: a string to FarmHash ``Fingerprint64`` of its UTF-8
    bytes, an integer to its own 64 bits (two's complement). With ``key = 0xDECAFCAFFE``:
    ``c = FingerprintCat64(... FingerprintCat64(FingerprintCat64(key, h(v_1)), h(v_2)) ..., h(v_k))`` and
    ``bin = c mod num_bins`` (unsigned). ``one_hot`` then gives ``(bin == t)`` for ``t < num_bins``
    in the layer's float dtype (a trailing axis of size 1 is replaced). Takes two or more features of
    equal shape ``()``, ``(N,)`` or ``(N, 1)``: string lists / numpy arrays or integer tensors.
    It drops a mask.
    """

    Config = HashedCrossingConfig
    takes_indices = True
    _float_anchor: torch.Tensor

    def __init__(self, config: HashedCrossingConfig) -> None:
        super().__init__()
        if config.num_bins < 1 or config.output_mode not in ("int", "one_hot"):
            raise ValueError(f"HashedCrossing needs num_bins >= 1 and output_mode int or one_hot; got {config}.")
        self.config = config
        self.register_buffer("_float_anchor", torch.zeros(0), persistent=False)

    def _hashes(self, x: Any) -> np.ndarray:
        """Each value's 64-bit feature hash, as an object array of Python ints."""
        if isinstance(x, torch.Tensor) or (isinstance(x, np.ndarray) and x.dtype.kind in "biuf"):
            array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
            if array.dtype.kind not in "iu":
                raise InputError(f"{self.describe()} crosses strings or integers. Received dtype {array.dtype}.")
            return np.vectorize(lambda v: int(v) & _U64, otypes=[object])(array.astype(np.int64))
        strings = as_string_array(x, self.describe())
        return np.vectorize(lambda s: fingerprint64(s.encode("utf-8")), otypes=[object])(strings)

    def forward(self, *features: Any) -> torch.Tensor:
        cfg = self.config
        if len(features) == 1 and isinstance(features[0], (list, tuple)) and len(features[0]) > 1:
            features = tuple(features[0])
        if len(features) < 2:
            raise InputError(f"{self.describe()} crosses at least two features. Received {len(features)}.")
        hashes = [self._hashes(f) for f in features]
        shape = hashes[0].shape
        if len(shape) > 2 or (len(shape) == 2 and shape[-1] != 1) or any(h.shape != shape for h in hashes):
            raise InputError(
                f"{self.describe()} takes features of one shape (), (N,) or (N, 1). Received shapes "
                f"{[h.shape for h in hashes]}."
            )
        flat = [h.reshape(-1) for h in hashes]
        bins = np.empty(flat[0].size, np.int64)
        for row in range(bins.size):
            crossed = CROSS_HASH_KEY
            for column in flat:
                crossed = fingerprint_cat64(crossed, column[row])
            bins[row] = crossed % cfg.num_bins
        ids = torch.from_numpy(bins.reshape(shape)).to(self._float_anchor.device)
        if cfg.output_mode == "int":
            return ids
        return encode_ids(self, ids, cfg.num_bins, "one_hot", self._float_anchor.dtype)

    def extra_repr(self) -> str:
        return f"num_bins={self.config.num_bins}, output_mode={self.config.output_mode!r}"
