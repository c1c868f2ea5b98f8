"""Converters for tf_keras ``LocallyConnected1D`` and ``LocallyConnected2D`` (implementations 1, 2, 3).

The runtime weight is ``(P, T, C, F)``: output position ``p`` (row-major over ``S_out``), window
tap ``j`` (row-major over ``k``, ``T = prod(k)``), input channel ``c``, filter ``f``. Output
position ``o`` reads input cell ``o * s - before + j`` (``before`` 0 for ``"valid"``,
``floor(k / 2)`` for ``"same"``); a tap outside the input gets weight 0.

==============  ===================  ===============================================  ============================
implementation  data_format          Keras ``kernel``                                 runtime ``weight``
==============  ===================  ===============================================  ============================
1               channels_last        ``(P, T * C, F)``, features ``(j, c)``            ``reshape(P, T, C, F)``
1               channels_first       ``(P, C * T, F)``, features ``(c, j)``            ``reshape(P, C, T, F)``, swap
2               channels_last        ``(*S, C, *S_out, F)`` dense, masked              gathered per ``(o, j)``
2               channels_first       ``(C, *S, F, *S_out)`` dense, masked              gathered per ``(o, j)``
3               channels_last        ``(nnz,)``: matrix ``(S_out, F) x (S, C)``        gathered per ``(o, j)``
3               channels_first       ``(nnz,)``: matrix ``(F, S_out) x (C, S)``        gathered per ``(o, j)``
==============  ===================  ===============================================  ============================

Implementation 3 stores the non-zero entries of its ``(out, in)`` matrix in sorted
``(out_index, in_index)`` order, that is row-major over the matrix. ``bias`` ``(*S_out, F)`` is
``bias.moveaxis(-1, 0)`` ``(F, *S_out)`` for channels last; for channels first tf_keras adds
``bias.reshape(F, *S_out)`` (a reshape, not a transpose), and so does the runtime.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.locally_connected import (
    LocallyConnectedConfig,
    locally_connected_output_length,
    window_before,
)

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    layer_label,
    refuse_unless,
    resolve_activation,
    to_tensor,
    unpack_weights,
)
from .conv import channels_first, int_tuple, single_int
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_locally_connected"]


def _window(length: int, k: int, s: int, padding: str, out: int) -> np.ndarray:
    """``(out, L)`` bool: output cell ``o`` reads input cell ``i`` (tf_keras' connectivity on one axis)."""
    before = window_before(k, padding)
    starts = np.arange(out)[:, None] * s - before  # (out, 1)
    cells = np.arange(length)[None, :]  # (1, L)
    return (cells >= starts) & (cells < starts + k)  # (out, L)


def _connectivity(sizes: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...], padding: str):
    """``(*S_out, *S)`` bool: output position ``o`` reads input position ``i``."""
    rank = len(sizes)
    out = tuple(locally_connected_output_length(*a, padding) for a in zip(sizes, kernel, strides))
    conn = np.ones((1,) * (2 * rank), bool)
    for axis, (length, k, s, o) in enumerate(zip(sizes, kernel, strides, out)):
        shape = [1] * (2 * rank)
        shape[axis], shape[rank + axis] = o, length
        conn = conn & _window(length, k, s, padding, o).reshape(shape)
    return conn, out


def _gather(dense: np.ndarray, sizes, kernel, strides, padding, out) -> np.ndarray:
    """``dense`` ``(*S, C, *S_out, F)`` → ``(P, T, C, F)``: tap ``j`` of position ``o`` is cell ``o * s - before + j``."""
    rank = len(sizes)
    channels, filters = dense.shape[rank], dense.shape[-1]
    weight = np.zeros((math.prod(out), math.prod(kernel), channels, filters), dense.dtype)
    for p, o in enumerate(itertools.product(*(range(n) for n in out))):
        for j, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
            cell = tuple(oi * s - window_before(k, padding) + t for oi, s, k, t in zip(o, strides, kernel, tap))
            if all(0 <= c < n for c, n in zip(cell, sizes)):
                weight[p, j] = dense[(*cell, slice(None), *o, slice(None))]  # (C, F)
    return weight


def _sparse_dense(
    values: np.ndarray, sizes, channels: int, filters: int, kernel, strides, padding, first: bool
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Implementation 3's ``(nnz,)`` values placed in ``(*S, C, *S_out, F)``, with ``S_out``."""
    rank = len(sizes)
    conn, out = _connectivity(sizes, kernel, strides, padding)  # (*S_out, *S)
    if first:  # rows (F, *S_out), columns (C, *S)
        mask = np.broadcast_to(
            conn.reshape(1, *out, 1, *sizes), (filters, *out, channels, *sizes)
        )  # (F, *S_out, C, *S)
        matrix = np.zeros(mask.shape, values.dtype)
        matrix[mask] = values
        order = (*range(rank + 2, 2 * rank + 2), rank + 1, *range(1, rank + 1), 0)
    else:  # rows (*S_out, F), columns (*S, C)
        mask = np.broadcast_to(
            conn.reshape(*out, 1, *sizes, 1), (*out, filters, *sizes, channels)
        )  # (*S_out, F, *S, C)
        matrix = np.zeros(mask.shape, values.dtype)
        matrix[mask] = values
        order = (*range(rank + 1, 2 * rank + 1), 2 * rank + 1, *range(rank), rank)
    return np.transpose(matrix, order), out  # (*S, C, *S_out, F)


def _sparse_shapes(layer, ctx, nnz, filters, out, kernel, strides, padding) -> tuple[tuple[int, ...], int]:
    """Implementation 3's input size ``S`` and channels ``C``: the unique pair whose connectivity holds ``nnz`` weights.

    For ``"valid"`` any ``S`` with output ``S_out`` reads the same cells, so the smallest is used.
    """
    ranges = []
    for o, k, s in zip(out, kernel, strides):
        smallest = (o - 1) * s + k
        ranges.append([smallest] if padding == "valid" else range((o - 1) * s + 1, o * s + 1))
    found: dict[int, tuple[tuple[int, ...], int]] = {}
    for sizes in itertools.product(*ranges):
        conn, got = _connectivity(sizes, kernel, strides, padding)
        taps = int(conn.sum())
        if got == out and nnz % (taps * filters) == 0 and nnz // (taps * filters) >= 1:
            found.setdefault(taps, (tuple(sizes), nnz // (taps * filters)))
    if len(found) != 1:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: implementation 3 stores {nnz} kernel values, which fit "
            f"{len(found)} input sizes/channel counts {sorted(found.values())} for output size {out}; "
            "the file does not record the input shape. Expected exactly one. Fix: save with implementation=2."
        )
    return next(iter(found.values()))


@register("LocallyConnected1D", "LocallyConnected2D")
def convert_locally_connected(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """tf_keras ``LocallyConnected1D/2D`` → the runtime module of the same name (see the module docstring)."""
    cfg = layer.config
    rank = 1 if layer.class_name.endswith("1D") else 2
    check_keys(
        layer,
        ctx,
        {"filters", "kernel_size", "strides", "padding", "data_format", "activation", "use_bias", "implementation"},
        INIT_REG_CONSTRAINT("kernel", "bias"),
    )
    implementation = refuse_unless(layer, ctx, "implementation", [1, 2, 3])
    filters = single_int(layer, ctx, "filters")
    kernel = int_tuple(layer, ctx, "kernel_size", rank)
    strides = int_tuple(layer, ctx, "strides", rank, 1)
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same") or (implementation == 1 and padding != "valid"):
        allowed = ["valid"] if implementation == 1 else ["valid", "same"]
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: padding is {cfg.get('padding')!r} with implementation {implementation}. "
            f"Expected one of {allowed} (tf_keras' own rule)."
        )
    first = channels_first(layer, ctx)
    use_bias = bool(cfg.get("use_bias", True))
    raw = layer.weights
    has_bias = use_bias and len(raw) == 2 and raw[1].ndim == rank + 1
    out: tuple[int, ...] | None = tuple(int(n) for n in raw[1].shape[:rank]) if has_bias else None
    taps = math.prod(kernel)
    sizes: tuple[int, ...] | None = None
    kernel_shape: tuple[int, ...] = ()
    if raw and implementation == 1 and raw[0].ndim == 3:
        positions, features = (int(n) for n in raw[0].shape[:2])
        channels = features // taps
        out = out or ((positions,) if rank == 1 else None)
        kernel_shape = (positions, taps * channels, filters)
    elif raw and implementation == 2 and raw[0].ndim == 2 * rank + 2:
        shape = tuple(int(n) for n in raw[0].shape)
        if first:  # (C, *S, F, *S_out)
            channels, sizes, out = shape[0], shape[1 : rank + 1], shape[rank + 2 :]
            kernel_shape = (channels, *sizes, filters, *out)
        else:  # (*S, C, *S_out, F)
            sizes, channels, out = shape[:rank], shape[rank], shape[rank + 1 : 2 * rank + 1]
            kernel_shape = (*sizes, channels, *out, filters)
    elif raw and implementation == 3 and raw[0].ndim == 1:
        if out is None:
            raise UnsupportedOptionError(
                f"{layer_label(layer, ctx)}: implementation 3 with use_bias False: the file records neither the "
                "input nor the output shape. Expected use_bias True. Fix: save with implementation=2."
            )
        sizes, channels = _sparse_shapes(layer, ctx, int(raw[0].shape[0]), filters, out, kernel, strides, padding)
        kernel_shape = (int(raw[0].shape[0]),)
    elif raw:
        ndim = {1: 3, 2: 2 * rank + 2, 3: 1}[implementation]
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: weight 'kernel' has shape {tuple(raw[0].shape)}. Expected {ndim} axes "
            f"for implementation {implementation}. The weights do not belong to this architecture."
        )
    else:
        channels = 0  # no weights: unpack_weights reports it
    expected: dict[str, tuple[int, ...]] = {"kernel": kernel_shape or (-1,)}
    if use_bias:
        expected["bias"] = (*(out or (-1,) * rank), filters)
    w = unpack_weights(layer, ctx, expected)
    values = w["kernel"]
    if implementation == 1:
        positions = values.shape[0]
        if first:  # features (c, j)
            weight = values.reshape(positions, channels, taps, filters).transpose(0, 2, 1, 3)
        else:  # features (j, c)
            weight = values.reshape(positions, taps, channels, filters)
    else:
        assert sizes is not None and out is not None
        if implementation == 2:
            dense = (
                np.transpose(values, (*range(1, rank + 1), 0, *range(rank + 2, 2 * rank + 2), rank + 1))
                if first
                else values
            )
        else:
            dense, out = _sparse_dense(values, sizes, channels, filters, kernel, strides, padding, first)
        weight = _gather(dense, sizes, kernel, strides, padding, out)  # (P, T, C, F)
    config = LocallyConnectedConfig(
        in_channels=channels,
        out_channels=filters,
        positions=int(weight.shape[0]),
        kernel_size=kernel[0] if rank == 1 else kernel,
        stride=strides[0] if rank == 1 else strides,
        padding=padding,
        use_bias=use_bias,
        activation=resolve_activation(layer, ctx, "activation"),
        channels_first=first,
        output_size=out,
        input_size=sizes if padding == "same" or implementation == 2 else None,
    )
    state: dict[str, Any] = {"weight": to_tensor(weight)}  # (P, T, C, F)
    if use_bias:
        bias = w["bias"]  # (*S_out, F)
        state["bias"] = to_tensor(bias.reshape(filters, *out) if first else np.moveaxis(bias, -1, 0))  # (F, *S_out)
    return ModuleSpec(layer.class_name, config, state)
