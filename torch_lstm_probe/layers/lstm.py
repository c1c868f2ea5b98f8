"""The Keras LSTM on PyTorch's fused kernel: the LSTM cell of the recurrent skeleton, and its CPU-tuned loop.

Shape legend used in the comments of this file:

    N = batch size, L = time steps, F = input features, H = units (hidden size).

Tensors are batch-first inside (``(N, L, ·)``) and in Keras layout at the border.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation, inplace_activation
from ..registry import register_module
from .base import ConfigMixin
from .recurrent import Recurrent, RecurrentConfig, States, StepEdit

__all__ = ["LSTM", "LSTMConfig", "LSTMGates", "lstm_reference"]


class LSTMGates(NamedTuple):
    """Per-step gates and states of one LSTM call, each ``(N, L, H)`` in processing order.

    For ``go_backwards=True`` index 0 is the last input step. At masked steps ``i f g o`` are 0
    and ``c h`` hold the carried state.
    """

    i: torch.Tensor  # input gate σ(z_i)
    f: torch.Tensor  # forget gate σ(z_f)
    g: torch.Tensor  # candidate act(z_c)
    o: torch.Tensor  # output gate σ(z_o)
    c: torch.Tensor  # cell state after the step
    h: torch.Tensor  # hidden state after the step


GATE_NAMES = ("i", "f", "g", "o", "c", "h")


@dataclass(frozen=True)
class LSTMConfig(RecurrentConfig):
    """An LSTM's config: the recurrent fields (:class:`RecurrentConfig`; ``activation`` is used for g and
    act(c)) and:"""

    recurrent_activation: str = "sigmoid"  # runtime activation name, used for i, f, o


class LSTM(Recurrent, ConfigMixin, nn.LSTM):
    r"""A Keras ``LSTM`` layer as a PyTorch ``nn.LSTM`` with Keras semantics.

    For each step t (in processing order), with Keras' packed kernels ``[i, f, c, o]``,
    which are PyTorch's ``[i, f, g, o]``:

    .. math::
        z_t = x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh} \\
        i_t = σ(z_i),\ f_t = σ(z_f),\ g_t = act(z_g),\ o_t = σ(z_o) \\
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t \\
        h_t = o_t ⊙ act(c_t)

    where σ is ``recurrent_activation`` and act is ``activation``. Keras' ``kernel`` is
    ``weight_ih_l0.T``, its ``recurrent_kernel`` is ``weight_hh_l0.T`` and its bias is
    ``bias_ih_l0`` (``bias_hh_l0`` is zero after conversion).

    Shapes (batch-first; swap N and L when ``time_major``):

    ============================  ===========================================
    input ``x``                   ``(N, L, F)``
    ``mask`` (optional, bool)     ``(N, L)``, True where a step is real
    ``initial_state`` (optional)  ``[h_0, c_0]``, each ``(N, H)``
    output                        ``(N, L, H)`` if ``return_sequences`` else ``(N, H)``
    with ``return_state``         ``(output, h_n, c_n)``, states ``(N, H)``
    ============================  ===========================================

    A stateful layer called with ``initial_state`` starts from the state that
    ``config.initial_state_rule`` picks, as the Keras generation that wrote the file did (see
    :mod:`torch_lstm_probe.layers.recurrent`).

    Masks, states, ``go_backwards`` and the fused paths come from the recurrent skeleton
    (:class:`~torch_lstm_probe.layers.recurrent.Recurrent`); this class adds the cell step, the
    gates derived from the fused outputs and, on CPU, an in-place time-major loop. It runs on the
    fused ``nn.LSTM`` kernel when the activations are tanh/sigmoid and the mask (if any) is
    contiguous; otherwise on an exact step loop. Gates are computed only when asked for:
    ``return_gates=True``, or a forward hook on one of ``hook_i … hook_h``.
    """

    Config = LSTMConfig
    Gates = LSTMGates
    STATE_NAMES = ("h", "c")
    GATE_NAMES = GATE_NAMES
    GATE_STATES = ("c", "h")
    _torch_rnn = nn.LSTM

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__(config.input_size, config.hidden_size, bias=config.use_bias, batch_first=True)
        self.config = config
        self._act = get_activation(config.activation)
        self._ract = get_activation(config.recurrent_activation)
        self._act_inplace = inplace_activation(config.activation)
        self._ract_inplace = inplace_activation(config.recurrent_activation)
        self._fusable = config.activation == "tanh" and config.recurrent_activation == "sigmoid"
        self._init_recurrent()

    # ------------------------------------------------------------------ internals
    def _bias(self) -> torch.Tensor | None:
        if not self.config.use_bias:
            return None
        return self.bias_ih_l0 + self.bias_hh_l0  # (4H,)

    def _time_major_loop(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, want_gates: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, LSTMGates | None]:
        """The unmasked step loop, tuned for CPU: time-major buffers, the input projection
        hoisted out of the loop, every step written in place into the gate buffer.

        The weight rows are regrouped ``[i, f, o, g]`` so the three σ gates are one contiguous
        slice. Per step: one ``addmm`` into ``Z[t]``, σ and act in place on two slices, then
        ``c_t = f c_{t-1} + i g`` into ``C[t]`` and ``h_t = o act(c_t)`` into ``H[t]``.
        """
        n, steps, _ = x.shape
        hidden = self.config.hidden_size
        order = self._ifog_order(x.device)
        bias = self._bias()
        w_ih = self.weight_ih_l0.index_select(0, order)  # (4H, F), rows [i f o g]
        w_hh_t = self.weight_hh_l0.index_select(0, order).t()  # (H, 4H)
        xt = x.transpose(0, 1)  # (L, N, F)
        z_all = F.linear(xt, w_ih, None if bias is None else bias.index_select(0, order))  # (L, N, 4H)
        c_all = x.new_empty(steps, n, hidden)  # (L, N, H)
        h_all = x.new_empty(steps, n, hidden)  # (L, N, H)
        ract, act = self._ract_inplace, self._act_inplace
        fused_tanh = self.config.activation == "tanh"
        i_, f_, o_, g_ = (slice(k * hidden, (k + 1) * hidden) for k in range(4))
        h, c = h0, c0
        for t in range(steps):
            z = z_all[t]  # (N, 4H), becomes [i f o g] in place
            z.addmm_(h, w_hh_t)
            ract(z[:, : 3 * hidden])
            act(z[:, g_])
            c_t, h_t = c_all[t], h_all[t]
            torch.mul(z[:, f_], c, out=c_t)
            c_t.addcmul_(z[:, i_], z[:, g_])
            if fused_tanh:
                torch.tanh(c_t, out=h_t)
            else:
                h_t.copy_(self._act(c_t))
            h_t.mul_(z[:, o_])
            h, c = h_t, c_t
        seq = h_all.transpose(0, 1)  # (N, L, H) view
        gates = None
        if want_gates:
            zb = z_all.transpose(0, 1)  # (N, L, 4H) view
            gates = LSTMGates(zb[..., i_], zb[..., f_], zb[..., g_], zb[..., o_], c_all.transpose(0, 1), seq)
        return seq, h, c, h, gates

    def _ifog_order(self, device: torch.device) -> torch.Tensor:
        """Row indices regrouping PyTorch's ``[i, f, g, o]`` gate blocks as ``[i, f, o, g]``."""
        hidden = self.config.hidden_size
        blocks = torch.arange(4 * hidden, device=device).view(4, hidden)
        return blocks[[0, 1, 3, 2]].reshape(-1)

    def _input_projection(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih_l0, self._bias())  # (N, L, 4H) as [i f g o]

    def _cell(self, xp: torch.Tensor, states: States, edit: StepEdit | None) -> tuple[States, States]:
        """One exact step from ``(h, c)``: ``((h_t, c_t), (i, f, g, o))``, each ``(N, H)``; an edited gate or
        state replaces the computed one before anything reads it."""
        h, c = states
        z = torch.addmm(xp, h, self.weight_hh_l0.t())  # (N, 4H)
        zi, zf, zg, zo = z.chunk(4, 1)
        i, f, g, o = self._ract(zi), self._ract(zf), self._act(zg), self._ract(zo)
        if edit is None:
            c_new = f * c + i * g
            return (o * self._act(c_new), c_new), (i, f, g, o)
        i, f, g, o = edit("i", i), edit("f", f), edit("g", g), edit("o", o)
        c_new = edit("c", f * c + i * g)
        return (edit("h", o * self._act(c_new)), c_new), (i, f, g, o)

    def _fast_loop(self, x: torch.Tensor, states0: tuple[torch.Tensor, ...], want_gates: bool) -> Any:
        """The in-place time-major loop, the fastest on CPU but not differentiable: only without autograd."""
        if torch.is_grad_enabled() and (x.requires_grad or self.weight_hh_l0.requires_grad):
            return None
        seq, h, c, last, gates = self._time_major_loop(x, states0[0], states0[1], want_gates)
        return seq, (h, c), last, gates

    def _gates_from_outputs(self, x: torch.Tensor, states0: tuple[torch.Tensor, ...], seq: torch.Tensor) -> LSTMGates:
        """Gates of an unmasked call from the fused kernel's outputs.

        Every ``h_{t-1}`` is known once the fused pass has run, so all pre-activations are one
        batched matmul; ``c_t = f_t c_{t-1} + i_t g_t`` is then a linear recurrence, solved on an
        accelerator by a parallel scan (:func:`affine_scan`): element-wise, no loop over time.
        """
        h0, c0 = states0
        h_prev = torch.cat([h0.unsqueeze(1), seq[:, :-1]], dim=1)  # (N, L, H)
        z = F.linear(x, self.weight_ih_l0, self._bias()) + F.linear(h_prev, self.weight_hh_l0)  # (N, L, 4H)
        zi, zf, zg, zo = z.chunk(4, dim=2)
        i, f, g, o = self._ract(zi), self._ract(zf), self._act(zg), self._ract(zo)  # (N, L, H) each
        if x.device.type == "cpu":  # on a CPU the step loop reads each value once: 6x faster than the scan
            return LSTMGates(i, f, g, o, _cell_loop(f, i * g, c0), seq)
        return LSTMGates(i, f, g, o, affine_scan(f, i * g, c0), seq)

    def extra_repr(self) -> str:
        cfg = self.config
        parts = [f"{cfg.input_size}, {cfg.hidden_size}"]
        for key in ("activation", "recurrent_activation"):
            parts.append(f"{key}={getattr(cfg, key)!r}")
        for key in ("use_bias", "return_sequences", "return_state", "go_backwards", "time_major", "stateful"):
            default = key == "use_bias"
            if getattr(cfg, key) != default:
                parts.append(f"{key}={getattr(cfg, key)}")
        return ", ".join(parts)


register_module("LSTM")(LSTM)


def _cell_loop(f: torch.Tensor, ig: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """``c_t = f_t c_{t-1} + ig_t`` step by step; (N, L, H)."""
    cs = torch.empty_like(ig)
    c = c0
    for t in range(ig.shape[1]):
        c = torch.addcmul(ig[:, t], f[:, t], c)
        cs[:, t] = c
    return cs


def affine_scan(a: torch.Tensor, b: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Every ``x_t = a_t x_{t-1} + b_t`` from ``x0``, by a Hillis-Steele scan over time.

    The maps ``x -> a x + b`` compose associatively (``(a2, b2) after (a1, b1) = (a2 a1, a2 b1 + b2)``),
    so ``ceil(log2 L)`` element-wise rounds give every step: a handful of kernels on an accelerator
    instead of one per step. The sums are grouped differently from the step-by-step recurrence,
    so results agree with it to rounding (a few ulp per round).

    Args:
        a, b: ``(N, L, H)``.
        x0: ``(N, H)``.

    Returns:
        ``(N, L, H)``: ``x_1 .. x_L``.
    """
    steps = a.shape[1]
    shift = 1
    while shift < steps:
        a_prev, b_prev = a[:, :-shift], b[:, :-shift]  # (N, L - shift, H): the maps ending shift steps earlier
        b = torch.cat([b[:, :shift], torch.addcmul(b[:, shift:], a[:, shift:], b_prev)], dim=1)
        a = torch.cat([a[:, :shift], a[:, shift:] * a_prev], dim=1)
        shift *= 2
    return torch.addcmul(b, a, x0.unsqueeze(1))  # (N, L, H)


def lstm_reference(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    h0: torch.Tensor | None = None,
    c0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    zero_output_for_mask: bool = False,
) -> tuple[torch.Tensor, LSTMGates]:
    """The plain step-by-step oracle: one ``LSTMCell``-style step per time step, no tricks.

    Args:
        x: ``(N, L, F)`` in processing order.
        weight_ih, weight_hh, bias: PyTorch layout ``(4H, F)``, ``(4H, H)``, ``(4H,)``.
        mask: optional bool ``(N, L)``; masked steps carry the state.

    Returns:
        ``(seq, gates)``: the sequence output ``(N, L, H)`` and every gate ``(N, L, H)``.
    """
    act, ract = get_activation(activation), get_activation(recurrent_activation)
    n, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    h = x.new_zeros(n, hidden) if h0 is None else h0
    c = x.new_zeros(n, hidden) if c0 is None else c0
    prev = x.new_zeros(n, hidden)
    rows: list[list[torch.Tensor]] = [[] for _ in range(7)]
    for t in range(steps):
        z = x[:, t] @ weight_ih.T + h @ weight_hh.T
        if bias is not None:
            z = z + bias
        zi, zf, zg, zo = z.split(hidden, dim=1)
        i, f, g, o = ract(zi), ract(zf), act(zg), ract(zo)
        c_new = f * c + i * g
        h_new = o * act(c_new)
        m = torch.ones(n, 1, dtype=torch.bool, device=x.device) if mask is None else mask[:, t, None]
        zero = torch.zeros_like(h_new)
        c, h = torch.where(m, c_new, c), torch.where(m, h_new, h)
        out = torch.where(m, h_new, zero if zero_output_for_mask else prev)
        prev = out
        for k, v in enumerate(
            (
                torch.where(m, i, zero),
                torch.where(m, f, zero),
                torch.where(m, g, zero),
                torch.where(m, o, zero),
                c,
                h,
                out,
            )
        ):
            rows[k].append(v)
    stacked = [torch.stack(r, dim=1) for r in rows]
    return stacked[6], LSTMGates(*stacked[:6])
