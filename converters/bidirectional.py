"""Converter for the Keras ``Bidirectional`` wrapper (Keras 2, tf_keras and Keras 3 configs).

The wrapper owns no weights of its own. ``get_weights()`` lists the forward layer's arrays
then the backward layer's; each half is converted by the registered converter of its class
(LSTM, GRU, SimpleRNN) and its state_dict keys gain the prefix ``forward_layer.`` or
``backward_layer.``:

===============================  ==========================================================
Keras                            PyTorch
===============================  ==========================================================
``layer`` (config + arrays)      ``forward_layer.*`` (e.g. ``forward_layer.weight_ih_l0``)
``backward_layer`` or a copy of  ``backward_layer.*``; without ``backward_layer`` it is the
``layer`` with ``go_backwards``  forward config with ``go_backwards`` flipped, as Keras builds
flipped                          it
===============================  ==========================================================

As in Keras (``force_zero_output_for_mask``), both halves get
``zero_output_for_mask = return_sequences`` whatever their stored config says.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping

from torch import nn

from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.bidirectional import MERGE_MODES, BidirectionalConfig
from torch_lstm_probe.layers.core import CustomRecurrent, CustomRecurrentConfig

from .common import Context, ModuleSpec, check_keys, inner_layer_spec, layer_label, refuse_unless
from .registry import lookup, register
from .spec import LayerSpec

__all__ = ["convert_bidirectional"]

BIDIRECTIONAL_SUPPORTED = frozenset({"layer", "merge_mode", "backward_layer", "num_constants"})
BIDIRECTIONAL_IGNORED: frozenset[str] = frozenset()

# Arrays per wrapped layer in get_weights() order, by class: (with bias, without bias). An
# RNN(cell) half holds its cell's arrays (a built-in cell: as many as its fused layer), an
# RNN(StackedRNNCells) half the sum over its cells.
_ARRAYS_PER_LAYER = {"LSTM": (3, 2), "GRU": (3, 2), "SimpleRNN": (3, 2)}
_ARRAYS_PER_CELL = {"LSTMCell": (3, 2), "GRUCell": (3, 2), "SimpleRNNCell": (3, 2)}
_MAX_STACK_DEPTH = 8  # StackedRNNCells nested in StackedRNNCells: Keras nests a few levels at most


def _inner_raw(layer: LayerSpec, ctx: Context, key: str) -> Mapping[str, Any]:
    raw = layer.config.get(key)
    if not isinstance(raw, Mapping) or "class_name" not in raw or not isinstance(raw.get("config"), Mapping):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is not a serialized layer. Received: {raw!r}. "
            "Expected {'class_name': ..., 'config': {...}}."
        )
    return raw


def _builtin_class(raw: Any) -> str | None:
    """The class name of a serialized Keras object of Keras' own (not a registered or user class)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("config"), Mapping):
        return None
    module = raw.get("module")
    name = str(raw.get("class_name"))
    if ">" in name or (module is not None and str(module).split(".", 1)[0] not in ("keras", "tf_keras")):
        return None
    return name


def _cell_array_count(raw: Any, depth: int = 0) -> int | None:
    """Arrays of a serialized built-in cell or StackedRNNCells of them; None when unknown."""
    name = _builtin_class(raw)
    if name in _ARRAYS_PER_CELL:
        with_bias, without_bias = _ARRAYS_PER_CELL[name]
        return with_bias if raw["config"].get("use_bias", True) else without_bias
    cells = raw["config"].get("cells") if name == "StackedRNNCells" else None
    if not isinstance(cells, (list, tuple)) or not cells or depth >= _MAX_STACK_DEPTH:
        return None
    counts = [_cell_array_count(cell, depth + 1) for cell in cells]
    return None if None in counts else sum(c for c in counts if c is not None)


def _known_array_count(raw: Mapping[str, Any]) -> int | None:
    """Arrays of one wrapped half in get_weights() order; None for a class whose count is unknown here."""
    name = str(raw["class_name"])
    if name == "RNN" and _builtin_class(raw) == "RNN":
        return _cell_array_count(raw["config"].get("cell"))
    counts = _ARRAYS_PER_LAYER.get(name)
    if counts is None:
        return None
    return counts[0] if raw["config"].get("use_bias", True) else counts[1]


def _shown_class(raw: Mapping[str, Any]) -> str:
    """``RNN(LSTMCell)`` for an RNN half, else the class name (for messages)."""
    cell = raw["config"].get("cell")
    shown = str(raw["class_name"])[:100]
    if isinstance(cell, Mapping):
        shown += f"({str(cell.get('registered_name') or cell.get('class_name'))[:100]})"
    return shown


def _forward_array_count(layer: LayerSpec, ctx: Context, fwd: Mapping[str, Any], bwd: Mapping[str, Any]) -> int:
    """Where the forward half's arrays end: its own count, else all but the backward half's."""
    count = _known_array_count(fwd)
    if count is not None:
        return count
    backward = _known_array_count(bwd)
    if backward is not None and backward <= len(layer.weights):
        return len(layer.weights) - backward
    raise UnsupportedOptionError(
        f"{layer_label(layer, ctx)}: its backward_layer {_shown_class(bwd)!r} differs from the forward layer "
        f"{_shown_class(fwd)!r}, and the number of weight arrays of neither is known here, so the weights cannot be "
        f"split. Expected one of {sorted(_ARRAYS_PER_LAYER)}, or RNN around one of {sorted(_ARRAYS_PER_CELL)} or a "
        "StackedRNNCells of them, for either half. Fix: give both halves the same class and options, or convert "
        "the whole wrapper with custom_layers={'Bidirectional': converter}."
    )


def _split_weights(
    layer: LayerSpec, ctx: Context, fwd: Mapping[str, Any], bwd: Mapping[str, Any], explicit_backward: bool
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The forward layer's arrays, then the backward layer's (get_weights() order)."""
    weights = layer.weights
    if not weights:
        return (), ()
    same_kind = (
        fwd["class_name"] == bwd["class_name"]
        and bool(fwd["config"].get("use_bias", True)) == bool(bwd["config"].get("use_bias", True))
        and _known_array_count(fwd) == _known_array_count(bwd)
    )
    if not explicit_backward or same_kind:
        if len(weights) % 2:
            raise WeightMismatchError(
                f"{layer_label(layer, ctx)}: the file has {len(weights)} weight arrays with shapes "
                f"{[tuple(w.shape) for w in weights]}. Expected an even number: the forward layer's, then the "
                "backward layer's."
            )
        n_forward = len(weights) // 2
    else:
        n_forward = _forward_array_count(layer, ctx, fwd, bwd)
    return tuple(weights[:n_forward]), tuple(weights[n_forward:])


@register("Bidirectional")
def convert_bidirectional(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Bidirectional`` → :class:`torch_lstm_probe.layers.Bidirectional`."""
    check_keys(layer, ctx, BIDIRECTIONAL_SUPPORTED, BIDIRECTIONAL_IGNORED)
    merge_mode = refuse_unless(layer, ctx, "merge_mode", list(MERGE_MODES))
    refuse_unless(layer, ctx, "num_constants", [0, None], "Cells with constants are not supported.")
    fwd_raw = _inner_raw(layer, ctx, "layer")
    explicit_backward = layer.config.get("backward_layer") is not None
    if explicit_backward:
        bwd_raw = _inner_raw(layer, ctx, "backward_layer")
    else:
        flipped = dict(fwd_raw["config"])
        flipped["go_backwards"] = not bool(flipped.get("go_backwards", False))
        bwd_raw = {**fwd_raw, "config": flipped}

    fwd_config, bwd_config = dict(fwd_raw["config"]), dict(bwd_raw["config"])
    for key in ("return_sequences", "return_state", "stateful"):
        if bool(fwd_config.get(key, False)) != bool(bwd_config.get(key, False)):
            raise UnsupportedOptionError(
                f"{layer_label(layer, ctx)}: the forward and backward layers disagree on {key!r} "
                f"({fwd_config.get(key, False)} vs {bwd_config.get(key, False)}). Keras requires them to agree."
            )
    if bool(fwd_config.get("go_backwards", False)) == bool(bwd_config.get("go_backwards", False)):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: the forward and backward layers have the same go_backwards "
            f"({fwd_config.get('go_backwards', False)}). Keras requires them to differ."
        )
    fwd_weights, bwd_weights = _split_weights(layer, ctx, fwd_raw, bwd_raw, explicit_backward)

    halves: dict[str, ModuleSpec] = {}
    custom: dict[str, nn.Module] = {}
    for role, raw, config, weights in (
        ("forward_layer", fwd_raw, fwd_config, fwd_weights),
        ("backward_layer", bwd_raw, bwd_config, bwd_weights),
    ):
        config["zero_output_for_mask"] = bool(config.get("return_sequences", False))  # Keras forces this
        for key in ("batch_input_shape", "batch_shape"):  # the fixed batch size of a stateful wrapper
            if key in layer.config and key not in config:
                config[key] = layer.config[key]
        inner = inner_layer_spec(layer, raw, role, weights, config=config)
        built = ctx.build_inner(inner) if ctx.build_inner is not None else None
        if built is not None:  # the user's module for a class that custom_layers names
            custom[role] = _custom_half(inner, ctx, built)
            continue
        converted = lookup(inner, ctx)(inner, ctx)
        if converted.call != "rnn":
            raise UnsupportedOptionError(
                f"{layer_label(inner, ctx)} is wrapped in Bidirectional but is not a recurrent layer. "
                "Expected LSTM, GRU or SimpleRNN."
            )
        if converted.children:  # a half holding a user's module (RNN around a custom cell): built here
            from .build import instantiate  # noqa: PLC0415 (build imports the registry this module fills)

            custom[role] = instantiate(converted)
            continue
        halves[role] = converted

    def entry(role: str) -> dict[str, Any]:
        if role in custom:  # built already; its config is not saved
            return {"type": None, "config": None}
        return {"type": halves[role].type, "config": asdict(halves[role].config)}

    config = BidirectionalConfig(entry("forward_layer"), entry("backward_layer"), merge_mode)
    state = {f"{role}.{k}": v for role, spec in halves.items() for k, v in spec.state_dict.items()}
    return ModuleSpec("Bidirectional", config, state, call="rnn", children=custom)


def _custom_half(inner: LayerSpec, ctx: Context, module: nn.Module) -> CustomRecurrent:
    """The user's module for one half, with the recurrent flags Bidirectional reads."""
    cfg = inner.config
    if cfg.get("return_state"):
        raise UnsupportedOptionError(
            f"{layer_label(inner, ctx)} is a custom layer (custom_layers) wrapped in Bidirectional with "
            "return_state=True; the states of a custom module are unknown here. Fix: convert the whole wrapper "
            "with custom_layers={'Bidirectional': converter}, or save the model without return_state."
        )
    flags = CustomRecurrentConfig(
        return_sequences=bool(cfg.get("return_sequences", False)),
        stateful=bool(cfg.get("stateful", False)),
        time_major=bool(cfg.get("time_major", False)),
        go_backwards=bool(cfg.get("go_backwards", False)),
    )
    return CustomRecurrent(flags, module)
