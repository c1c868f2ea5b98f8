"""Converter for the Keras ``RNN`` layer around the built-in cells (Keras 2, tf_keras and Keras 3 configs).

``RNN(cell)`` computes exactly what the fused layer of the same cell computes, so it becomes
that layer: its config is the cell's config with the wrapper's options (``return_sequences``,
``return_state``, ``go_backwards``, ``stateful``, ``time_major``, ``zero_output_for_mask``;
``unroll`` changes nothing), its weights the cell's, and the fused layer's registered
converter does the rest (masks, ``initial_state``, gates, Bidirectional halves):

==========================================  ====================================================
Keras                                       runtime
==========================================  ====================================================
``RNN(LSTMCell)``                           ``LSTM``
``RNN(GRUCell)``                            ``GRU``
``RNN(SimpleRNNCell)``                      ``SimpleRNN``
``RNN(StackedRNNCells([c_0, …, c_n]))``     ``StackedRecurrent``: the fused layer of each cell as
                                            ``cell_<k>``, run one after another; every layer but
                                            the last returns sequences, only ``cell_0`` may go
                                            backwards
==========================================  ====================================================

Weights: ``get_weights()`` lists the cell's arrays (``kernel``, ``recurrent_kernel``[, ``bias``]);
for a stack, each cell's arrays in stack order. A ``.keras`` file (Keras 3 and tf_keras) stores a
stack's cells under ``cells/<snake_case(class)>[_<n>]``, and its weights come out sorted by that
name (``gru_cell`` before ``lstm_cell``, ``lstm_cell_10`` before ``lstm_cell_2``). The cells'
order is therefore taken from the arrays' shapes: the ``get_weights()`` order, or else the
by-name order, whichever fits the cells' configs.

States of a stack (``return_state``, ``initial_state``): Keras 3 and tf_keras return
``[output, states of c_0, states of c_1, …]`` (an LSTM cell's ``[h, c]`` nested as a list, which the
graph flattens). Older writers (standalone Keras 2.x, tf.keras "-tf" versions) are not checked here,
and some ordered them the other way round (Keras 2.1: last cell first), so their files are
refused where the states are read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from torch_lstm_probe.errors import UnsupportedLayerError, UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.cell_rnn import CellRNNConfig, cell_state_sizes
from torch_lstm_probe.layers.stacked import StackedRecurrentConfig

from .common import Context, ModuleSpec, check_keys, config_int, inner_layer_spec, layer_label, refuse_unless
from .readers.graph import snake_case
from .recurrent import initial_state_rule, sequence_options
from .registry import lookup, register
from .spec import LayerSpec

__all__ = ["convert_rnn", "CELL_LAYERS", "stacked_state_order_known"]

# Built-in cell class → the fused layer class computing the same thing, and its gate blocks.
CELL_LAYERS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
_GATE_BLOCKS = {"LSTMCell": 4, "GRUCell": 3, "SimpleRNNCell": 1}

RNN_SUPPORTED = frozenset(
    {
        "cell",
        "return_sequences",
        "return_state",
        "go_backwards",
        "stateful",
        "time_major",
        "zero_output_for_mask",
        "num_constants",
    }
)
RNN_IGNORED = frozenset({"unroll"})
STACKED_SUPPORTED = frozenset({"cells"})
# The cell's identity keys: the RNN layer's own name, trainable and dtype stand for the cell's.
_CELL_IDENTITY = ("name", "trainable", "dtype")


@register("RNN")
def convert_rnn(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``RNN(cell)`` → the runtime layer of the fused class of ``cell`` (or a stack of them)."""
    raw = _serialized_cell(layer, ctx, layer.config.get("cell"), "cell")
    stacked = _class_name(raw) == "StackedRNNCells" and _is_builtin(raw)
    if not stacked and not (_class_name(raw) in CELL_LAYERS and _is_builtin(raw)):
        cell = inner_layer_spec(layer, raw, "cell", layer.weights)
        module = ctx.build_inner(cell) if ctx.build_inner is not None else None
        if module is None:
            _check_builtin_cell(layer, ctx, raw)  # raises: no converter for this cell
        check_keys(layer, ctx, RNN_SUPPORTED, RNN_IGNORED)
        refuse_unless(layer, ctx, "num_constants", [None, 0], "Cells with constants are not supported.")
        return _custom_cell_spec(layer, ctx, module)  # type: ignore[arg-type]
    check_keys(layer, ctx, RNN_SUPPORTED, RNN_IGNORED)
    refuse_unless(layer, ctx, "num_constants", [None, 0], "Cells with constants are not supported.")
    if stacked:
        return _convert_stacked(layer, ctx, raw)
    spec = _fused_spec(layer, raw, layer.weights, {}, f"{layer.path or layer.name}/cell")
    return lookup(spec, ctx)(spec, ctx)


def _custom_cell_spec(layer: LayerSpec, ctx: Context, cell: nn.Module) -> ModuleSpec:
    """``RNN(user's cell)`` → :class:`torch_lstm_probe.layers.cell_rnn.CellRNN` holding ``cell``."""
    try:
        sizes = cell_state_sizes(cell)
    except ValueError as err:
        raise UnsupportedOptionError(f"{layer_label(layer, ctx)}: {err}") from None
    if len(set(sizes)) != 1:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: its cell's states have sizes {sizes}. Expected every state of the "
            "same size (the units), as the recurrent skeleton carries (batch, units) states."
        )
    features = getattr(cell, "input_size", None)
    if not isinstance(features, int) or features < 1:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: its cell module {type(cell).__name__} has input_size {features!r}. "
            "Expected the number of input features per step as an int attribute input_size."
        )
    config = CellRNNConfig(
        input_size=features, hidden_size=sizes[0], num_states=len(sizes), **sequence_options(layer, ctx)
    )
    return ModuleSpec("CellRNN", config, {}, call="rnn", children={"cell": cell})


def stacked_state_order_known(ctx: Context) -> bool:
    """Whether the file's writer returns a stack's states cell by cell, first cell first.

    ================================================  ==========================================
    writer                                            states of ``StackedRNNCells([c_0, c_1])``
    ================================================  ==========================================
    Keras 3; tf_keras and tf.keras >= 2.4             ``[states of c_0, states of c_1]``
    (checked live in Keras 3.15 and tf_keras 2.21)
    standalone Keras 2.x, tf.keras "-tf" versions     not checked here (Keras 2.1: last cell first,
                                                      ``[h_1, c_1, h_0, c_0]``): refused
    ================================================  ==========================================
    """
    if ctx.keras_version.major >= 3:
        return True
    return ctx.library == "tf_keras" and not ctx.keras_version.tf


# ---------------------------------------------------------------------------- cells


def _serialized_cell(layer: LayerSpec, ctx: Context, raw: Any, key: str) -> Mapping[str, Any]:
    """``raw`` if it is a serialized cell ``{"class_name": ..., "config": {...}}``; else UnsupportedOptionError."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("config"), Mapping) or "class_name" not in raw:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is not a serialized cell. Received: {str(raw)[:200]}. "
            "Expected {'class_name': ..., 'config': {...}}."
        )
    return raw


def _class_name(raw: Mapping[str, Any]) -> str:
    """The cell's class name (the part after ``>`` of a registered ``"package>Class"``)."""
    return str(raw.get("class_name")).rsplit(">", 1)[-1]


def _is_builtin(raw: Mapping[str, Any]) -> bool:
    """Whether ``raw`` is Keras' own class: not a registered custom class, not from a user module."""
    module = raw.get("module")
    from_keras = module is None or str(module).split(".", 1)[0] in ("keras", "tf_keras")
    return ">" not in str(raw.get("class_name")) and from_keras


def _check_builtin_cell(layer: LayerSpec, ctx: Context, raw: Mapping[str, Any], where: str = "") -> None:
    """Raises UnsupportedLayerError unless ``raw`` is one of the built-in cells."""
    name = _class_name(raw)
    if name in CELL_LAYERS and _is_builtin(raw):
        return
    shown = str(raw.get("registered_name") or raw.get("class_name"))[:100]
    raise UnsupportedLayerError(
        f"{layer_label(layer, ctx)} wraps a cell of class {shown!r}{where}, which this loader cannot run. "
        f"Expected one of the built-in cells {sorted(CELL_LAYERS)} or a StackedRNNCells of them. Fix: pass "
        f"custom_layers={{{name!r}: converter}} in tlp.load_keras, where converter(config, weights) returns the "
        "cell as an nn.Module computing one step, forward(x_t, states) -> (h, new_states), with attributes "
        "input_size and state_size (the README shows a peephole LSTM cell); or custom_layers={'RNN': converter} "
        "returning a module for the whole RNN layer (this converts every RNN layer of the model)."
    )


def _fused_spec(
    layer: LayerSpec,
    raw: Mapping[str, Any],
    weights: tuple[np.ndarray, ...],
    overrides: Mapping[str, Any],
    path: str,
) -> LayerSpec:
    """The fused layer (``LSTM``, ``GRU``, ``SimpleRNN``) that computes ``RNN(cell)``.

    Its config is the cell's config (less its identity) with the RNN layer's keys and then
    ``overrides``; it keeps the RNN layer's name and calls, so probe keys name the RNN layer.
    """
    cell_config = {k: v for k, v in raw["config"].items() if k not in _CELL_IDENTITY}
    options = {k: v for k, v in layer.config.items() if k not in ("cell", "num_constants")}
    return LayerSpec(
        name=layer.name,
        class_name=CELL_LAYERS[_class_name(raw)],
        config={**cell_config, **options, **overrides},
        weights=tuple(weights),
        calls=layer.calls,
        path=path,
    )


# ---------------------------------------------------------------------------- StackedRNNCells


def _convert_stacked(layer: LayerSpec, ctx: Context, raw: Mapping[str, Any]) -> ModuleSpec:
    """``RNN(StackedRNNCells([...]))`` → :class:`torch_lstm_probe.layers.StackedRecurrent`."""
    stack = inner_layer_spec(layer, raw, "cell", ())
    check_keys(stack, ctx, STACKED_SUPPORTED, ())
    cells = _stacked_cells(layer, ctx, stack)
    _check_state_order(layer, ctx)
    cfg = layer.config
    base = layer.path or layer.name
    last = len(cells) - 1
    converted: list[ModuleSpec] = []
    for k, (raw_cell, weights) in enumerate(zip(cells, _cell_weights(layer, ctx, cells))):
        overrides = {
            "return_sequences": k < last or bool(cfg.get("return_sequences", False)),
            "go_backwards": k == 0 and bool(cfg.get("go_backwards", False)),
        }
        spec = _fused_spec(layer, raw_cell, weights, overrides, f"{base}/cell_{k}")
        module = lookup(spec, ctx)(spec, ctx)
        # The stack picks every cell's start state at once (StackedRecurrent._start_states).
        module.config = dataclasses.replace(module.config, initial_state_rule="given")
        converted.append(module)
    config = StackedRecurrentConfig(
        cells=tuple({"type": m.type, "config": asdict(m.config)} for m in converted),
        return_sequences=bool(cfg.get("return_sequences", False)),
        return_state=bool(cfg.get("return_state", False)),
        go_backwards=bool(cfg.get("go_backwards", False)),
        time_major=bool(cfg.get("time_major", False)),
        stateful=bool(cfg.get("stateful", False)),
        initial_state_rule=initial_state_rule(ctx),
    )
    state = {f"cell_{k}.{key}": value for k, m in enumerate(converted) for key, value in m.state_dict.items()}
    return ModuleSpec("StackedRecurrent", config, state, call="rnn")


def _stacked_cells(layer: LayerSpec, ctx: Context, stack: LayerSpec) -> list[Mapping[str, Any]]:
    """The serialized cells of a StackedRNNCells, each checked to be a built-in cell."""
    raw_cells = stack.config.get("cells")
    if not isinstance(raw_cells, (list, tuple)) or not raw_cells:
        raise UnsupportedOptionError(
            f"{layer_label(stack, ctx)}: config key 'cells' is {str(raw_cells)[:200]}. Expected a non-empty list of "
            "serialized cells."
        )
    cells = []
    for k, raw_cell in enumerate(raw_cells):
        cell = _serialized_cell(stack, ctx, raw_cell, f"cells[{k}]")
        _check_builtin_cell(layer, ctx, cell, f" (cell {k} of its StackedRNNCells)")
        cells.append(cell)
    return cells


def _check_state_order(layer: LayerSpec, ctx: Context) -> None:
    """Refuses to read a stack's states where the writer's state order is not known."""
    if stacked_state_order_known(ctx):
        return
    uses = [key for key in ("return_state", "initial_state") if _reads_states(layer, key)]
    if uses:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)} runs a StackedRNNCells and reads its states. Received: {' and '.join(uses)} "
            f"in a file written by Keras {ctx.keras_version}, whose order of the cells' states is not known here "
            "(Keras 2.1 put the last cell's states first). Expected a file from Keras 3 or tf_keras >= 2.4, which "
            "put the first cell's states first. Fix: save the model with Keras 3 or tf_keras, or without "
            "return_state/initial_state on this layer."
        )


def _reads_states(layer: LayerSpec, key: str) -> bool:
    """Whether ``layer`` returns its states (``"return_state"``) or is given some (``"initial_state"``)."""
    if key == "return_state":
        return bool(layer.config.get("return_state", False))
    return _has_initial_state(layer)


def _has_initial_state(layer: LayerSpec) -> bool:
    """Whether a call of ``layer`` passes initial states (as ``initial_state`` or extra inputs)."""
    for call in layer.calls:
        if call.kwargs.get("initial_state") is not None:
            return True
        if len(call.args) > 1 and call.args[1] is not None:
            return True
        first = call.args[0] if call.args else None
        if isinstance(first, (list, tuple)) and len(first) > 1:
            return True
    return False


# ---------------------------------------------------------------------------- stacked weights


def _cell_weights(layer: LayerSpec, ctx: Context, cells: Sequence[Mapping[str, Any]]) -> list[tuple[np.ndarray, ...]]:
    """Each cell's arrays, from the layer's arrays in ``get_weights()`` order or in ``.keras`` by-name order.

    Raises:
        WeightMismatchError: the arrays fit neither order, or fit both orders differently.
    """
    counts = [3 if raw["config"].get("use_bias", True) else 2 for raw in cells]
    weights = tuple(layer.weights)
    if not weights:
        return [()] * len(cells)  # each cell's converter names the missing arrays
    if len(weights) != sum(counts):
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the file has {len(weights)} weight arrays with shapes "
            f"{[tuple(w.shape) for w in weights]}. Expected {sum(counts)}: {counts} for its cells "
            f"{[_class_name(raw) for raw in cells]} (kernel, recurrent_kernel and, with use_bias, bias)."
        )
    listed = list(range(len(cells)))
    by_name = _saved_order(cells)
    fits = {tuple(order): _fits(layer, ctx, cells, _split(weights, counts, order)) for order in (listed, by_name)}
    if fits[tuple(listed)] and (by_name == listed or not fits[tuple(by_name)]):
        return _split(weights, counts, listed)
    if fits[tuple(by_name)] and not fits[tuple(listed)]:
        return _split(weights, counts, by_name)
    if fits[tuple(listed)]:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the weights of its StackedRNNCells fit two orders of its cells (the cells' "
            "own, and the by-name order of a .keras file), so which array belongs to which cell is unknown. Fix: "
            "save the model as .h5, whose weight names fix the order."
        )
    raise WeightMismatchError(
        f"{layer_label(layer, ctx)}: the weight arrays, with shapes {[tuple(w.shape) for w in weights]}, do not fit "
        f"its cells {[_class_name(raw) for raw in cells]} with units {[raw['config'].get('units') for raw in cells]}. "
        "The weights do not belong to this architecture."
    )


def _saved_order(cells: Sequence[Mapping[str, Any]]) -> list[int]:
    """The cells in the order a ``.keras`` file lists their weights: by ``snake_case(class)[_<n>]``."""
    used: dict[str, int] = {}
    names = []
    for raw in cells:
        name = snake_case(_class_name(raw))
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        names.append(name)
    return sorted(range(len(cells)), key=lambda k: names[k])


def _split(
    weights: tuple[np.ndarray, ...], counts: Sequence[int], order: Sequence[int]
) -> list[tuple[np.ndarray, ...]]:
    """Each cell's arrays, when the arrays list the cells in ``order``."""
    per_cell: list[tuple[np.ndarray, ...]] = [()] * len(counts)
    offset = 0
    for k in order:
        per_cell[k] = weights[offset : offset + counts[k]]
        offset += counts[k]
    return per_cell


def _fits(
    layer: LayerSpec, ctx: Context, cells: Sequence[Mapping[str, Any]], per_cell: Sequence[tuple[np.ndarray, ...]]
) -> bool:
    """Whether every cell's arrays have the shapes its config and the previous cell's units imply."""
    features: int | None = None  # the first cell reads whatever the input has
    for raw, arrays in zip(cells, per_cell):
        units = config_int(layer, ctx, "units", config=raw["config"])
        width = _GATE_BLOCKS[_class_name(raw)] * units
        kernel, recurrent = arrays[0], arrays[1]
        if kernel.ndim != 2 or kernel.shape[1] != width or (features is not None and kernel.shape[0] != features):
            return False
        if tuple(recurrent.shape) != (units, width):
            return False
        if len(arrays) > 2 and (arrays[2].ndim not in (1, 2) or arrays[2].shape[-1] != width):
            return False
        features = units
    return True
