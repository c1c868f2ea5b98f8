"""Shared converter plumbing: the conversion context, the converted-module record, config-key
policy (supported / ignored on purpose / refused), weight unpacking and activation names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from torch_lstm_probe.errors import KerasFileError, UnsupportedOptionError, WeightMismatchError

from .spec import KerasVersion, LayerSpec, ModelSpec

__all__ = [
    "Context",
    "InnerBuilder",
    "ModuleSpec",
    "inner_layer_spec",
    "COMMON_IGNORED",
    "INIT_REG_CONSTRAINT",
    "check_keys",
    "refuse_unless",
    "unpack_weights",
    "resolve_activation",
    "layer_label",
    "to_tensor",
    "config_int",
    "MAX_CONFIG_INT",
]


# Builds a wrapper's inner layer as a module when the user's custom_layers name its class or it is
# a nested model; returns None when the registered converter applies.
InnerBuilder = Callable[[LayerSpec], "nn.Module | None"]


@dataclass(frozen=True)
class Context:
    """What a converter may know besides the layer: where it comes from and which Keras wrote it."""

    source: str  # file path (or "<keras.Model …>") for messages
    keras_version: KerasVersion  # version that wrote the file: picks version-dependent formulas
    library: str = "keras"  # "keras" or "tf_keras"
    batch_size: int | None = None  # the model's fixed batch size, when its input declares one
    # Set by the model builder for wrapper converters (TimeDistributed, Bidirectional): see InnerBuilder.
    build_inner: InnerBuilder | None = field(default=None, compare=False, repr=False)


@dataclass
class ModuleSpec:
    """A converted layer: the runtime module type, its config and its state_dict.

    ``call`` names the layer's call convention for the graph builder: ``"default"`` (tensors in
    the first argument) or ``"rnn"`` (Keras 2 passes ``initial_state`` as extra inputs).
    """

    type: str
    config: Any  # the runtime module's Config dataclass
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    call: str = "default"
    # Submodules built already (a custom or nested inner layer of a wrapper), passed to the runtime
    # module's constructor by name; their weights are theirs, not in state_dict.
    children: dict[str, nn.Module] = field(default_factory=dict)


# Keys every layer may carry that change nothing at inference.
COMMON_IGNORED = frozenset(
    {
        "name",
        "trainable",
        "dtype",
        "batch_input_shape",
        "batch_shape",
        "batch_size",
        "input_shape",
        "input_dtype",
        "activity_regularizer",
        "autocast",
    }
)


def INIT_REG_CONSTRAINT(*weights: str) -> frozenset[str]:
    """``<w>_initializer``, ``<w>_regularizer`` and ``<w>_constraint`` for each weight name."""
    return frozenset(f"{w}_{kind}" for w in weights for kind in ("initializer", "regularizer", "constraint"))


def layer_label(layer: LayerSpec, ctx: Context) -> str:
    return f"{ctx.source}: layer {layer.path or layer.name!r} ({layer.class_name})"


def inner_layer_spec(
    layer: LayerSpec,
    raw: Mapping[str, Any],
    role: str,
    weights: tuple[np.ndarray, ...],
    config: Mapping[str, Any] | None = None,
    model: ModelSpec | None = None,
) -> LayerSpec:
    """The LayerSpec of the layer a wrapper holds under config key ``role`` (its serialized ``raw``).

    Keras 3's legacy h5 writes a registered custom class as ``"package>Class"``: the class name is
    the part after ``>`` and the whole is the registered name, as for top-level layers.
    """
    class_name = str(raw.get("class_name"))
    registered = raw.get("registered_name")
    if ">" in class_name:
        registered, class_name = class_name, class_name.rsplit(">", 1)[1]
    inner_config = dict(raw.get("config") or {}) if config is None else config
    return LayerSpec(
        name=str(inner_config.get("name", class_name)),
        class_name=class_name,
        config=inner_config,
        weights=weights,
        path=f"{layer.path or layer.name}/{role}",
        module=raw.get("module"),
        registered_name=str(registered) if registered else None,
        model=model,
    )


def check_keys(layer: LayerSpec, ctx: Context, supported: Iterable[str], ignored: Iterable[str]) -> None:
    """Raises UnsupportedOptionError for a config key neither supported nor ignored on purpose.

    A new Keras option therefore never slips through unseen: it must be added to one list.
    """
    known = set(supported) | set(ignored) | COMMON_IGNORED
    unknown = sorted(set(layer.config) - known)
    if unknown:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)} has config key(s) {unknown} that this converter does not know, so it "
            f"cannot promise exact results. Received: {{{', '.join(f'{k!r}: {layer.config[k]!r}' for k in unknown)}}}. "
            f"Expected keys among: {sorted(set(supported))}. Fix: remove the option in Keras, or register a "
            "converter with custom_layers."
        )


def refuse_unless(layer: LayerSpec, ctx: Context, key: str, allowed: Iterable[Any], hint: str = "") -> Any:
    """Returns ``config[key]`` if it is one of ``allowed`` (a missing key counts as the first)."""
    allowed = list(allowed)
    value = layer.config.get(key, allowed[0])
    if value not in allowed:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {value!r}, which is not supported. "
            f"Expected one of {allowed}." + (f" {hint}" if hint else "")
        )
    return value


_REQUIRED: Any = object()
MAX_CONFIG_INT = 2**31 - 1  # the largest size a config may give (Keras sizes are 32-bit)


def config_int(
    layer: LayerSpec,
    ctx: Context,
    key: str,
    default: Any = _REQUIRED,
    minimum: int = 1,
    config: Mapping[str, Any] | None = None,
) -> int:
    """``config[key]`` (``layer.config`` by default) as an int in ``minimum..MAX_CONFIG_INT``.

    An integral float (``3.0``) counts as that int. Anything else (``"abc"``, ``None``, a list, a
    negative or huge size) is a damaged file, and raises KerasFileError naming the layer and key.
    """
    source = layer.config if config is None else config
    value = source.get(key, default) if isinstance(source, Mapping) else default
    if value is _REQUIRED:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: the config has no {key!r}. Expected an integer >= {minimum}. "
            "Keras always writes it: the file is damaged or was edited."
        )
    integral = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, (bool, np.bool_)) or not integral or not minimum <= value <= MAX_CONFIG_INT:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {shown}. Expected an integer in "
            f"{minimum}..{MAX_CONFIG_INT}. Keras never writes this: the file is damaged or was edited."
        )
    return int(value)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def unpack_weights(layer: LayerSpec, ctx: Context, expected: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Checks the layer's arrays against ``{keras_name: shape}`` (in order) and names them."""
    weights = layer.weights
    names = list(expected)
    if len(weights) != len(names):
        if not weights:
            raise WeightMismatchError(
                f"{layer_label(layer, ctx)}: the file has no weights for this layer. Expected {len(names)} "
                f"array(s) {names}. The file may have been saved before the model was built, or is damaged."
            )
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the file has {len(weights)} weight array(s) with shapes "
            f"{[tuple(w.shape) for w in weights]}. Expected {len(names)}: "
            f"{', '.join(f'{n} {s}' for n, s in expected.items())}."
        )
    out = {}
    for name, array in zip(names, weights):
        want = expected[name]
        if tuple(array.shape) != tuple(want):
            raise WeightMismatchError(
                f"{layer_label(layer, ctx)}: weight {name!r} has shape {tuple(array.shape)}. Expected {tuple(want)} "
                "from the layer config. The weights do not belong to this architecture."
            )
        if array.dtype.kind not in "fiu":
            raise WeightMismatchError(
                f"{layer_label(layer, ctx)}: weight {name!r} has non-numeric dtype {array.dtype}."
            )
        out[name] = array
    return out


# Keras activation names whose formula does not depend on the Keras version.
_PLAIN_ACTIVATIONS = {
    "linear": "linear",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "relu6": "relu6",
    "elu": "elu",
    "selu": "selu",
    "softsign": "softsign",
    "softplus": "softplus",
    "swish": "swish",
    "silu": "swish",
    "exponential": "exponential",
    "mish": "mish",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "log_sigmoid": "log_sigmoid",
    "tanh_shrink": "tanh_shrink",
    "sparse_plus": "sparse_plus",
    "squareplus": "squareplus",
    "soft_shrink": "soft_shrink",
    "hard_shrink": "hard_shrink",
    "hard_tanh": "hard_tanh",
    "celu": "celu",
    "glu": "glu",
}


def resolve_activation(layer: LayerSpec, ctx: Context, key: str, default: str = "linear") -> str:
    """Maps the Keras activation in ``config[key]`` to a runtime activation name.

    ``hard_sigmoid`` is ``clip(0.2x + 0.5)`` before Keras 3 and ``clip(x/6 + 0.5)`` from Keras 3 on;
    the formula is picked by the file's ``keras_version``, never by the name alone.
    """
    value = layer.config.get(key, default)
    if value is None:
        return "linear"
    if isinstance(value, Mapping):  # Keras 3 may wrap a built-in function by name
        inner = value.get("config")
        if value.get("class_name") == "function" and isinstance(inner, str):
            value = inner
        else:
            raise UnsupportedOptionError(
                f"{layer_label(layer, ctx)}: {key!r} is a custom activation object {value!r}. Only built-in "
                "Keras activations are supported. Fix: use a built-in name, or convert the layer with custom_layers."
            )
    name = str(value)
    keras3 = ctx.keras_version.major >= 3
    if name in _PLAIN_ACTIVATIONS:
        return _PLAIN_ACTIVATIONS[name]
    if name == "hard_sigmoid":
        return "keras3_hard_sigmoid" if keras3 else "keras2_hard_sigmoid"
    if name == "gelu":
        return "gelu_erf"  # keras.activations.gelu / tf_keras gelu default approximate=False
    if name in ("hard_silu", "hard_swish") and keras3:
        return "keras3_hard_silu"
    if name == "leaky_relu" and keras3:
        return "keras3_leaky_relu"
    raise UnsupportedOptionError(
        f"{layer_label(layer, ctx)}: {key!r} is {name!r}, which is not a built-in Keras "
        f"{ctx.keras_version.major}.x activation this converter reproduces. Supported: "
        f"{sorted(set(_PLAIN_ACTIVATIONS) | {'hard_sigmoid', 'gelu'})}."
    )
