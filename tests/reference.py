"""Independent float64 NumPy references for recurrent layers, written from the Keras equations
(not from the runtime code). Tests check these references against Keras' own outputs before
using them as the oracle for gates."""

from __future__ import annotations

import numpy as np


def np_activation(name: str, keras_major: int):
    """Keras activations by name, as NumPy float64 functions."""
    table = {
        "tanh": np.tanh,
        "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
        "relu": lambda z: np.maximum(z, 0.0),
        "linear": lambda z: z,
        "hard_sigmoid": (lambda z: np.clip(z / 6.0 + 0.5, 0.0, 1.0))
        if keras_major >= 3
        else (lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0)),
        "softsign": lambda z: z / (1.0 + np.abs(z)),
        "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    }
    return table[name]


def lstm_np(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    keras_major: int = 3,
    mask: np.ndarray | None = None,
    go_backwards: bool = False,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    zero_output_for_mask: bool = False,
) -> dict[str, np.ndarray]:
    """Keras LSTM semantics in float64 with Keras weights ``[i, f, c, o]``.

    Returns ``seq`` (processing order, (N, L, H)), ``h``/``c`` final states, and the gates
    ``i f g o c h`` (processing order; masked steps: 0 for i f g o, carried c h).
    """
    x = np.asarray(x, np.float64)
    n, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    act, ract = np_activation(activation, keras_major), np_activation(recurrent_activation, keras_major)
    mask = np.ones((n, steps), bool) if mask is None else np.asarray(mask, bool)
    if go_backwards:
        x, mask = x[:, ::-1], mask[:, ::-1]
    h = np.zeros((n, units)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((n, units)) if c0 is None else np.asarray(c0, np.float64)
    prev = np.zeros((n, units))
    out = {k: np.zeros((n, steps, units)) for k in ("seq", "i", "f", "g", "o", "c", "h")}
    k64, r64 = kernel.astype(np.float64), recurrent_kernel.astype(np.float64)
    for t in range(steps):
        z = x[:, t] @ k64 + h @ r64
        if bias is not None:
            z = z + bias.astype(np.float64)
        i = ract(z[:, :units])
        f = ract(z[:, units : 2 * units])
        g = act(z[:, 2 * units : 3 * units])
        o = ract(z[:, 3 * units :])
        c_new = f * c + i * g
        h_new = o * act(c_new)
        m = mask[:, t : t + 1]
        c = np.where(m, c_new, c)
        h = np.where(m, h_new, h)
        y = np.where(m, h_new, 0.0 if zero_output_for_mask else prev)
        prev = y
        out["seq"][:, t] = y
        for name, value in (("i", i), ("f", f), ("g", g), ("o", o)):
            out[name][:, t] = np.where(m, value, 0.0)
        out["c"][:, t] = c
        out["h"][:, t] = h
    out["h_final"], out["c_final"] = h, c
    return out
