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
    edits: dict | None = None,
) -> dict[str, np.ndarray]:
    """Keras LSTM semantics in float64 with Keras weights ``[i, f, c, o]``.

    ``edits``: ``{gate: fn(step, value)}`` replacing ``i f g o c h`` as each is computed, at every
    step where some row is unmasked (the intervention contract).

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
        e = _editor(edits, t, mask[:, t])
        i, f, g, o = e("i", i), e("f", f), e("g", g), e("o", o)
        c_new = e("c", f * c + i * g)
        h_new = e("h", o * act(c_new))
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


def _editor(edits: dict | None, step: int, valid: np.ndarray):
    """``e(name, value)``: the edit of ``name`` at ``step`` when some row is valid there, else the value."""
    if not edits or not valid.any():
        return lambda name, value: value
    return lambda name, value: edits[name](step, value) if name in edits else value


def _run_single_state(x, mask, go_backwards, h0, zero_output_for_mask, step_fn, names):
    """The Keras loop for one-state cells: ``step_fn(x_t, h, e) -> (h_new, inner gates)``."""
    x = np.asarray(x, np.float64)
    n, steps, _ = x.shape
    mask = np.ones((n, steps), bool) if mask is None else np.asarray(mask, bool)
    if go_backwards:
        x, mask = x[:, ::-1], mask[:, ::-1]
    h = h0
    prev = np.zeros_like(h)
    out = {k: np.zeros((n, steps, h.shape[1])) for k in ("seq", *names)}
    for t in range(steps):
        h_new, inner = step_fn(t, x[:, t], h, mask[:, t])
        m = mask[:, t : t + 1]
        h = np.where(m, h_new, h)
        y = np.where(m, h_new, 0.0 if zero_output_for_mask else prev)
        prev = y
        out["seq"][:, t] = y
        for name, value in zip(names[:-1], inner):
            out[name][:, t] = np.where(m, value, 0.0)
        out[names[-1]][:, t] = h
    out["h_final"] = h
    return out


def gru_np(
    x,
    weight_ih,
    weight_hh,
    bias_ih,
    bias_hh,
    reset_after=True,
    mask=None,
    go_backwards=False,
    zero_output_for_mask=False,
    edits=None,
):
    """Keras GRU semantics in float64 from PyTorch-layout weights (gate blocks ``[r, z, n]``), sigmoid/tanh.

    Returns ``seq`` and the gates ``z r n h`` (processing order; masked steps 0 for z r n, carried h).
    """
    hidden = weight_hh.shape[1]
    w_r, w_z, w_n = np.split(np.asarray(weight_ih, np.float64), 3)
    u_r, u_z, u_n = np.split(np.asarray(weight_hh, np.float64), 3)
    zeros = np.zeros(3 * hidden)
    bi_r, bi_z, bi_n = np.split(zeros if bias_ih is None else np.asarray(bias_ih, np.float64), 3)
    bh_r, bh_z, bh_n = np.split(zeros if bias_hh is None else np.asarray(bias_hh, np.float64), 3)
    sig = np_activation("sigmoid", 3)

    def step(t, xt, h, valid):
        e = _editor(edits, t, valid)
        r = e("r", sig(xt @ w_r.T + bi_r + h @ u_r.T + bh_r))
        z = e("z", sig(xt @ w_z.T + bi_z + h @ u_z.T + bh_z))
        if reset_after:
            n = e("n", np.tanh(xt @ w_n.T + bi_n + r * (h @ u_n.T + bh_n)))
        else:
            n = e("n", np.tanh(xt @ w_n.T + bi_n + bh_n + (r * h) @ u_n.T))
        return e("h", z * h + (1 - z) * n), (z, r, n)

    h0 = np.zeros((np.asarray(x).shape[0], hidden))
    return _run_single_state(x, mask, go_backwards, h0, zero_output_for_mask, step, ("z", "r", "n", "h"))


def simple_rnn_np(
    x,
    weight_ih,
    weight_hh,
    bias,
    activation="tanh",
    mask=None,
    go_backwards=False,
    zero_output_for_mask=False,
    edits=None,
):
    """Keras SimpleRNN semantics in float64 from PyTorch-layout weights. Returns ``seq`` and ``h``."""
    act = np_activation(activation, 3)
    w, u = np.asarray(weight_ih, np.float64), np.asarray(weight_hh, np.float64)
    b = 0.0 if bias is None else np.asarray(bias, np.float64)

    def step(t, xt, h, valid):
        return _editor(edits, t, valid)("h", act(xt @ w.T + h @ u.T + b)), ()

    h0 = np.zeros((np.asarray(x).shape[0], u.shape[0]))
    return _run_single_state(x, mask, go_backwards, h0, zero_output_for_mask, step, ("h",))
