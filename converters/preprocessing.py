"""Converters for Keras numeric preprocessing layers: Rescaling, Normalization, CategoryEncoding,
ActivityRegularization, IntegerLookup in int mode, Discretization and Hashing.

====================================  ===================================  ==============================
Keras value                           where the file keeps it              PyTorch
====================================  ===================================  ==============================
Rescaling ``scale``, ``offset``       config: number, list, ``__numpy__``  buffers ``scale``, ``offset``
Normalization ``mean``, ``variance``  weights ``mean, variance, count``,   buffers ``mean``, ``variance``
                                      or config ``mean``, ``variance``
IntegerLookup ``vocabulary``          config: a list of tokens, or (an     config ``vocabulary``
                                      adapted layer) the ``.keras``
                                      archive's ``assets/<path>/
                                      vocabulary.txt``
====================================  ===================================  ==============================

An adapted IntegerLookup's vocabulary file is read the way Keras' ``load_assets`` reads it: UTF-8,
one token a line (Keras 3: ``str.splitlines()`` with trailing empty lines dropped; tf_keras: split on
newlines only), each line parsed with ``int()``, then checked like a config vocabulary. A file
without assets (legacy ``.h5``) keeps no adapted vocabulary: that layer is refused with the fix.
The string layers (TextVectorization, StringLookup) are in :mod:`converters.text`.

Discretization keeps its boundaries in the config when they were given, and in Keras 3 after
``adapt`` as well; tf_keras writes ``bin_boundaries: null`` for an adapted layer and keeps its
quantile summary as the weight ``summary`` of shape ``(2, n)`` (values, weights), from which the
boundaries are recomputed as tf_keras' ``finalize_state`` does. Hashing keeps everything in its
config. HashedCrossing hashes with ``tf.sparse.cross_hashed`` (FarmHash's ``FingerprintCat64``
over the crossed features: strings by Fingerprint64, integers by their own 64 bits), reproduced in
:class:`torch_lstm_probe.layers.preprocessing.HashedCrossing`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from torch import nn

from torch_lstm_probe.errors import KerasFileError, UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.core import DropoutConfig
from torch_lstm_probe.layers.preprocessing import (
    ActivityRegularizationConfig,
    CategoryEncodingConfig,
    DiscretizationConfig,
    HashedCrossingConfig,
    HashingConfig,
    IntegerLookupConfig,
    NormalizationConfig,
    PipelineConfig,
    RescalingConfig,
)
from torch_lstm_probe.registry import module_type_name

from .common import (
    Context,
    ModuleSpec,
    check_keys,
    config_int,
    inner_layer_spec,
    layer_label,
    refuse_unless,
    to_tensor,
    unpack_weights,
)
from .registry import register
from .spec import LayerSpec

__all__ = [
    "convert_rescaling",
    "convert_normalization",
    "convert_category_encoding",
    "convert_activity_regularization",
    "convert_integer_lookup",
    "convert_discretization",
    "convert_hashing",
    "convert_pipeline",
    "convert_max_num_bounding_boxes",
    "convert_hashed_crossing",
]

_MAX_CONFIG_VALUES = 1 << 20  # numbers a config array may hold (a hostile file could list more)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _config_array(layer: LayerSpec, ctx: Context, key: str, value: Any) -> np.ndarray:
    """A config number, nested list, or Keras 3 ``{"class_name": "__numpy__", ...}`` as float64.

    Anything else (a string, a ragged list, another serialized object) raises KerasFileError
    naming the layer and key.
    """
    if isinstance(value, Mapping) and value.get("class_name") == "__numpy__":
        inner = value.get("config")
        value = inner.get("value") if isinstance(inner, Mapping) else None
    if isinstance(value, Mapping) or isinstance(value, (str, bytes, bool)) or value is None:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {_short(value)}. Expected a number or a (nested) "
            "list of numbers. Keras never writes this: the file is damaged or was edited."
        )
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {_short(value)}, not a rectangular array of numbers "
            f"({err}). The file is damaged or was edited."
        ) from None
    if array.size > _MAX_CONFIG_VALUES:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config key {key!r} holds {array.size} numbers. Expected at most "
            f"{_MAX_CONFIG_VALUES}. The file is damaged or was edited."
        )
    return array


@register("Rescaling")
def convert_rescaling(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Rescaling`` → :class:`torch_lstm_probe.layers.preprocessing.Rescaling`: ``y = x * scale + offset``.

    ``scale`` and ``offset`` are cast to float32 as Keras casts them to its compute dtype, and
    broadcast from the last axis (Keras' channels-last default; ``image_data_format`` is a
    process setting the file does not record).
    """
    check_keys(layer, ctx, {"scale", "offset"}, set())
    unpack_weights(layer, ctx, {})
    scale = _config_array(layer, ctx, "scale", layer.config.get("scale", 1.0))
    offset = _config_array(layer, ctx, "offset", layer.config.get("offset", 0.0))
    keep_mask = ctx.keras_version.major >= 3  # Keras 2's Rescaling does not support masking: the mask stops
    config = RescalingConfig(scale_shape=tuple(scale.shape), offset_shape=tuple(offset.shape), keep_mask=keep_mask)
    return ModuleSpec("Rescaling", config, {"scale": to_tensor(scale), "offset": to_tensor(offset)})


def _normalization_axes(layer: LayerSpec, ctx: Context) -> tuple[int, ...]:
    """Keras ``axis``: None → (), an int → (int,), a list of distinct ints as given."""
    value: Any = layer.config.get("axis", -1)
    if value is None:
        return ()
    axes = [value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if (
        not isinstance(axes, (list, tuple))
        or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes)
        or len({int(a) for a in axes}) != len(axes)
    ):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: axis is {_short(value)}. Expected None, an integer or a list of distinct "
            "integers."
        )
    return tuple(int(a) for a in axes)


def _config_stats(layer: LayerSpec, ctx: Context, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``mean`` and ``variance`` given in the config, broadcast to one shape (of rank <= len(axes))."""
    mean = _config_array(layer, ctx, "mean", layer.config.get("mean"))
    variance = _config_array(layer, ctx, "variance", layer.config.get("variance"))
    try:
        mean, variance = np.broadcast_arrays(mean, variance)
    except ValueError:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config mean has shape {mean.shape} and variance {variance.shape}. Expected "
            "shapes that broadcast together. The file is damaged or was edited."
        ) from None
    if mean.ndim > len(axes):
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config mean/variance have rank {mean.ndim} for axis {list(axes)}. Expected "
            f"rank <= {len(axes)} (Keras refuses more). The file is damaged or was edited."
        )
    return mean, variance


def _weight_stats(layer: LayerSpec, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """The adapted ``mean`` and ``variance`` weights (``count`` is checked and not used)."""
    shape = tuple(int(d) for d in layer.weights[0].shape) if layer.weights else (0,)
    w = unpack_weights(layer, ctx, {"mean": shape, "variance": shape, "count": ()})
    return w["mean"], w["variance"]


@register("Normalization")
def convert_normalization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Normalization`` → :class:`torch_lstm_probe.layers.preprocessing.Normalization`.

    ``y = (x - mean) / max(sqrt(variance), 1e-7)``; with ``invert``: ``y = mean + x * max(sqrt(variance), 1e-7)``.
    Statistics come from the config when it gives ``mean`` and ``variance``, else from the adapted
    weights ``mean``, ``variance``, ``count``.
    """
    check_keys(layer, ctx, {"axis", "mean", "variance", "invert"}, set())
    axes = _normalization_axes(layer, ctx)
    given = [layer.config.get(k) is not None for k in ("mean", "variance")]
    if given[0] != given[1]:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: the config sets only one of mean and variance. Expected both or neither "
            "(Keras refuses one alone). The file is damaged or was edited."
        )
    if given[0]:
        unpack_weights(layer, ctx, {})
        mean, variance = _config_stats(layer, ctx, axes)
    else:
        mean, variance = _weight_stats(layer, ctx)
    invert = bool(layer.config.get("invert", False))
    keep_mask = ctx.keras_version.major >= 3  # Keras 2's Normalization does not support masking: the mask stops
    config = NormalizationConfig(axes=axes, stats_shape=tuple(mean.shape), invert=invert, keep_mask=keep_mask)
    return ModuleSpec("Normalization", config, {"mean": to_tensor(mean), "variance": to_tensor(variance)})


@register("CategoryEncoding")
def convert_category_encoding(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``CategoryEncoding`` → :class:`torch_lstm_probe.layers.preprocessing.CategoryEncoding`.

    ``output_mode`` one_hot, multi_hot (``binary`` is its old name) or count; dense output only.
    """
    check_keys(layer, ctx, {"num_tokens", "output_mode", "sparse"}, set())
    unpack_weights(layer, ctx, {})
    refuse_unless(
        layer, ctx, "sparse", [False], "Sparse outputs are not produced. Fix: save the layer with sparse=False."
    )
    mode = layer.config.get("output_mode", "multi_hot")
    mode = "multi_hot" if mode == "binary" else mode
    if mode not in ("one_hot", "multi_hot", "count"):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: output_mode is {_short(mode)}. Expected one of 'one_hot', 'multi_hot', "
            "'count'. Fix: use one of these modes in Keras."
        )
    config = CategoryEncodingConfig(num_tokens=config_int(layer, ctx, "num_tokens"), output_mode=mode)
    return ModuleSpec("CategoryEncoding", config)


@register("ActivityRegularization")
def convert_activity_regularization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``ActivityRegularization`` → the identity (its penalty is a training loss only)."""
    check_keys(layer, ctx, {"l1", "l2"}, set())
    unpack_weights(layer, ctx, {})
    values = {}
    for key in ("l1", "l2"):
        value = layer.config.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KerasFileError(
                f"{layer_label(layer, ctx)}: config key {key!r} is {_short(value)}. Expected a number. The file is "
                "damaged or was edited."
            )
        values[key] = float(value)
    return ModuleSpec("ActivityRegularization", ActivityRegularizationConfig(**values))


_VOCABULARY_ASSET = "vocabulary.txt"  # where Keras saves an adapted vocabulary, in the layer's assets
_LOOKUP_IGNORED = {"max_tokens", "pad_to_max_tokens", "sparse", "vocabulary_size", "salt"}


def _int_token(layer: LayerSpec, ctx: Context, key: str, value: Any) -> int:
    """An int64 token (a bool, a non-integral number or one outside int64 is a damaged file)."""
    integral = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not integral or not -(2**63) <= value < 2**63:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: {key} holds {_short(value)}. Expected an integer token in the int64 range. "
            "The file is damaged or was edited."
        )
    return int(value)


def _asset_vocabulary(layer: LayerSpec, ctx: Context) -> list[Any] | None:
    """The tokens of the layer's saved ``vocabulary.txt``, parsed as Keras' ``load_assets`` parses them;
    None when the layer has no such file."""
    blob = layer.assets.get(_VOCABULARY_ASSET)
    if blob is None:
        return None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as err:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: its vocabulary file {_VOCABULARY_ASSET!r} is not UTF-8 text ({err}). Keras "
            "writes UTF-8: the file is damaged or was edited."
        ) from None
    if ctx.library == "tf_keras":  # tf_keras splits on "\n" only, after universal-newline reading
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    else:
        lines = text.splitlines()
        while lines and lines[-1] == "":
            lines.pop()
    if len(lines) > _MAX_CONFIG_VALUES:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: its vocabulary file {_VOCABULARY_ASSET!r} holds {len(lines)} lines. "
            f"Expected at most {_MAX_CONFIG_VALUES} tokens. The file is damaged or was edited."
        )
    tokens: list[Any] = []
    for number, line in enumerate(lines, 1):
        try:
            tokens.append(int(line))
        except ValueError:
            raise KerasFileError(
                f"{layer_label(layer, ctx)}: line {number} of its vocabulary file {_VOCABULARY_ASSET!r} is "
                f"{_short(line)}. Expected one integer token a line (Keras refuses to load it too). The file is "
                "damaged or was edited."
            ) from None
    return tokens


def _lookup_vocabulary(layer: LayerSpec, ctx: Context, mask_token: int | None, num_oov: int) -> tuple[int, ...]:
    """The vocabulary (the config's, else the archive's ``vocabulary.txt``) without a leading
    ``[mask] + [oov] * num_oov`` block, as Keras strips it."""
    value: Any = layer.config.get("vocabulary")
    where = "config key 'vocabulary'"
    if isinstance(value, str):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'vocabulary' is the file {_short(value)}; this loader reads "
            "nothing outside the model file. Expected a list of tokens. Fix: rebuild the layer in Keras with "
            "vocabulary=layer.get_vocabulary() and save again."
        )
    if value is None:
        value = _asset_vocabulary(layer, ctx)
        where = f"its vocabulary file {_VOCABULARY_ASSET!r}"
        if value is None:
            raise UnsupportedOptionError(
                f"{layer_label(layer, ctx)}: the file holds no vocabulary: config key 'vocabulary' is null and there "
                f"is no {_VOCABULARY_ASSET!r} among the layer's assets {sorted(layer.assets)}. Expected the tokens "
                "in the config or in a .keras archive's assets (where an adapted layer keeps them; a legacy .h5 "
                "does not). Fix: save the model as .keras and load that file, pass the live model to "
                "tlp.load_keras, or rebuild the layer with vocabulary=layer.get_vocabulary() and save again."
            )
    if not isinstance(value, (list, tuple)) or not value or len(value) > _MAX_CONFIG_VALUES:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: {where} is {_short(value)}. Expected a non-empty list of at most "
            f"{_MAX_CONFIG_VALUES} integer tokens. The file is damaged or was edited."
        )
    tokens = [_int_token(layer, ctx, where, v) for v in value]
    oov_token = layer.config.get("oov_token", -1)
    special = [mask_token] * (mask_token is not None) + [oov_token] * num_oov
    if tokens[: len(special)] == special:
        tokens = tokens[len(special) :]
    if len(set(tokens)) != len(tokens) or mask_token in tokens or not tokens:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: the vocabulary repeats a token, holds the mask token {mask_token!r} after "
            "the special tokens, or has no token besides them. Expected distinct tokens (Keras refuses repeats and a "
            "misplaced mask token): the file is damaged or was edited."
        )
    return tuple(tokens)


@register("IntegerLookup")
def convert_integer_lookup(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``IntegerLookup`` (``output_mode="int"``, vocabulary in the config or the archive's assets) →
    :class:`torch_lstm_probe.layers.preprocessing.IntegerLookup`.

    ``index = m + num_oov_indices + position`` for a known token (``m = 1`` with a mask token),
    ``0`` for the mask token, ``m + floormod(token, num_oov_indices)`` for an unknown one.
    """
    cfg = layer.config
    check_keys(
        layer,
        ctx,
        {"vocabulary", "num_oov_indices", "mask_token", "oov_token", "output_mode", "invert", "idf_weights"}
        | {"vocabulary_dtype", "oov_method"},
        _LOOKUP_IGNORED,
    )
    unpack_weights(layer, ctx, {})
    refuse_unless(layer, ctx, "output_mode", ["int"], "Fix: use CategoryEncoding after an int-mode lookup.")
    refuse_unless(layer, ctx, "invert", [False], "The inverse lookup (index → token) is not converted.")
    refuse_unless(layer, ctx, "idf_weights", [None], "TF-IDF weights are not used in int mode.")
    refuse_unless(layer, ctx, "vocabulary_dtype", ["int64", "int32"])
    num_oov = config_int(layer, ctx, "num_oov_indices", 1, minimum=0)
    if num_oov > 1:
        refuse_unless(
            layer, ctx, "oov_method", ["floormod"], "Fix: use oov_method='floormod' (token % num_oov_indices)."
        )
    mask = cfg.get("mask_token")
    mask_token = None if mask is None else _int_token(layer, ctx, "config key 'mask_token'", mask)
    vocabulary = _lookup_vocabulary(layer, ctx, mask_token, num_oov)
    config = IntegerLookupConfig(vocabulary=vocabulary, num_oov_indices=num_oov, mask_token=mask_token)
    return ModuleSpec("IntegerLookup", config)


_OUTPUT_MODES = ("int", "one_hot", "multi_hot", "count")


def _summary_boundaries(summary: np.ndarray, num_bins: int) -> np.ndarray:
    """tf_keras' ``get_bin_boundaries(summary, num_bins)``: the summary compressed to
    ``epsilon = 1 / num_bins`` and its values without the last.

    With ``n`` summary columns, nothing is compressed when ``n * epsilon < 1``. Else
    ``p_k = epsilon + k * epsilon`` (``k = 0, 1, ...`` while ``k * epsilon < 1``), ``c`` the
    cumulative weights over their total, and ``b_k = interp(p_k, c, values)`` in float32.
    """
    summary = summary.astype(np.float32)
    epsilon = 1.0 / num_bins
    if summary.shape[1] * epsilon < 1:
        return summary[0, :-1]
    percents = epsilon + np.arange(0.0, 1.0, epsilon)
    cum_weights = summary[1].cumsum()
    values = np.interp(percents, cum_weights / cum_weights[-1], summary[0])
    return values.astype(np.float32)[:-1]


@register("Discretization")
def convert_discretization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Discretization`` → :class:`torch_lstm_probe.layers.preprocessing.Discretization`:
    ``index(x) = #{i : bin_boundaries[i] <= x}``, then encoded as ``output_mode`` says.

    Boundaries come from the config, else (tf_keras, adapted) from the ``summary`` weight.
    """
    check_keys(layer, ctx, {"bin_boundaries", "num_bins", "epsilon", "output_mode", "sparse"}, set())
    refuse_unless(
        layer, ctx, "sparse", [False], "Sparse outputs are not produced. Fix: save the layer with sparse=False."
    )
    mode = layer.config.get("output_mode", "int")
    if mode not in _OUTPUT_MODES:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: output_mode is {_short(mode)}. Expected one of {list(_OUTPUT_MODES)}."
        )
    given = layer.config.get("bin_boundaries")
    if given is not None:
        unpack_weights(layer, ctx, {})
        boundaries = _config_array(layer, ctx, "bin_boundaries", given).reshape(-1)
    elif layer.weights:
        num_bins = config_int(layer, ctx, "num_bins")
        shape = tuple(int(d) for d in layer.weights[0].shape)
        summary = unpack_weights(layer, ctx, {"summary": (2, shape[1] if len(shape) == 2 else 0)})["summary"]
        if not summary.shape[1]:
            raise UnsupportedOptionError(
                f"{layer_label(layer, ctx)}: the layer was never adapted (its summary is empty and bin_boundaries "
                "is null), so Keras cannot run it either. Expected bin_boundaries or an adapted summary. Fix: call "
                "adapt() or pass bin_boundaries, and save again."
            )
        boundaries = _summary_boundaries(summary, num_bins).astype(np.float64)
    else:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: the file holds no bin boundaries: config key 'bin_boundaries' is null and "
            "the layer has no 'summary' weight. Expected boundaries in the config or an adapted summary. Fix: "
            "rebuild the layer with bin_boundaries=layer.bin_boundaries and save again."
        )
    values = boundaries.astype(np.float32)
    if not np.isfinite(values).all() or (np.diff(values) < 0).any():
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: bin_boundaries {_short(boundaries.tolist())} are not finite and sorted in "
            "float32. Expected ascending finite numbers (TensorFlow's Bucketize needs them sorted). The file is "
            "damaged or was edited."
        )
    config = DiscretizationConfig(bin_boundaries=tuple(float(v) for v in values), output_mode=str(mode))
    return ModuleSpec("Discretization", config)


@register("Hashing")
def convert_hashing(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Hashing`` (no salt, ``output_mode="int"``) → :class:`torch_lstm_probe.layers.preprocessing.Hashing`:
    ``bin = fingerprint64(str(x)) mod num_bins``, or with ``mask_value`` ``0`` for the mask and
    ``1 + fingerprint64(str(x)) mod (num_bins - 1)`` for the rest.
    """
    check_keys(layer, ctx, {"num_bins", "mask_value", "salt", "output_mode", "sparse"}, set())
    unpack_weights(layer, ctx, {})
    refuse_unless(
        layer, ctx, "salt", [None], "The keyed SipHash of a salted Hashing is not reproduced. Fix: use salt=None."
    )
    refuse_unless(layer, ctx, "output_mode", ["int"], "Fix: use CategoryEncoding after an int-mode Hashing.")
    refuse_unless(layer, ctx, "sparse", [False])
    mask = layer.config.get("mask_value")
    if mask is not None and (isinstance(mask, bool) or not isinstance(mask, (str, int))):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: mask_value is {_short(mask)}. Expected None, a string or an integer."
        )
    config = HashingConfig(
        num_bins=config_int(layer, ctx, "num_bins"), mask_value=mask, cast_floats=ctx.keras_version.major >= 3
    )
    return ModuleSpec("Hashing", config)


@register("Pipeline")
def convert_pipeline(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``Pipeline`` → :class:`torch_lstm_probe.layers.preprocessing.Pipeline`: its layers,
    each converted as if it stood alone, run in order.

    The file keeps the weights of all inner layers one after another; each inner layer takes the
    first ``k`` remaining arrays for the smallest ``k`` its converter accepts (converters check the
    exact count and shapes they need), and none may be left over.
    """
    from .build import instantiate  # the builder imports every converter module
    from .registry import lookup

    check_keys(layer, ctx, {"layers"}, set())
    raws: Any = layer.config.get("layers")
    if not isinstance(raws, list) or not all(
        isinstance(r, Mapping) and isinstance(r.get("config", {}), Mapping) for r in raws
    ):
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config key 'layers' is {_short(raws)}. Expected a list of serialized "
            "layers. The file is damaged or was edited."
        )
    weights = tuple(layer.weights)
    modules, items = [], []
    for i, raw in enumerate(raws):
        converted: nn.Module | None = None
        for k in range(len(weights) + 1):
            inner = inner_layer_spec(layer, raw, f"layers/{i}", weights[:k])
            try:
                built = ctx.build_inner(inner) if ctx.build_inner is not None else None
                if built is None:
                    spec = lookup(inner, ctx)(inner, ctx)
                    built = instantiate(spec)
            except WeightMismatchError:
                if k == len(weights):
                    raise
                continue
            converted, weights = built, weights[k:]
            break
        assert converted is not None
        modules.append(converted)
        type_name = module_type_name(converted)
        items.append({"type": type_name, "config": converted.get_config() if type_name else None})
    if weights:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: {len(weights)} weight array(s) with shapes "
            f"{[tuple(w.shape) for w in weights]} are left after its {len(raws)} layers took theirs. Expected none: "
            "the weights do not belong to this pipeline."
        )
    return ModuleSpec("Pipeline", PipelineConfig(layers=tuple(items)), children={"layers": nn.ModuleList(modules)})


@register("MaxNumBoundingBoxes")
def convert_max_num_bounding_boxes(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``MaxNumBoundingBoxes`` → the identity (:class:`torch_lstm_probe.layers.Dropout` at rate 0).

    It truncates or pads (with ``fill_value``) the bounding boxes and labels of a dict input to
    ``max_number``; a plain image tensor, the only input a converted graph carries, is returned
    unchanged. The layer does not support masking: a mask stops there.
    """
    check_keys(layer, ctx, {"max_number", "fill_value", "data_format"}, set())
    unpack_weights(layer, ctx, {})
    return ModuleSpec("Dropout", DropoutConfig(0.0, keeps_mask=False))


@register("HashedCrossing")
def convert_hashed_crossing(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``HashedCrossing`` (dense output) → :class:`torch_lstm_probe.layers.preprocessing.HashedCrossing`:
    ``bin = FingerprintCat64(... FingerprintCat64(0xDECAFCAFFE, h(v_1)) ..., h(v_k)) mod num_bins``."""
    check_keys(layer, ctx, {"num_bins", "output_mode", "sparse"}, set())
    unpack_weights(layer, ctx, {})
    refuse_unless(
        layer, ctx, "sparse", [False], "Sparse outputs are not produced. Fix: save the layer with sparse=False."
    )
    mode = layer.config.get("output_mode", "int")
    if mode not in ("int", "one_hot"):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: output_mode is {_short(mode)}. Expected 'int' or 'one_hot'."
        )
    return ModuleSpec("HashedCrossing", HashedCrossingConfig(config_int(layer, ctx, "num_bins"), str(mode)))
