"""The Keras GRU layer on PyTorch's fused ``nn.GRU`` kernel, both ``reset_after`` variants.

Shape legend used in the comments of this file:

    N = batch size, L = time steps, F = input features, H = units (hidden size).

Tensors are batch-first inside (``(N, L, ·)``) and in Keras layout at the border.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation
from ..registry import register_module
from .base import ConfigMixin
from .recurrent import Recurrent, RecurrentConfig, States, StepEdit

__all__ = ["GRU", "GRUConfig", "GRUGates", "gru_reference"]


class GRUGates(NamedTuple):
    """Per-step gates and state of one GRU call, each ``(N, L, H)`` in processing order.

    For ``go_backwards=True`` index 0 is the last input step. At masked steps ``z r n`` are 0
    and ``h`` holds the carried state.
    """

    z: torch.Tensor  # update gate σ(·)
    r: torch.Tensor  # reset gate σ(·)
    n: torch.Tensor  # candidate ĥ = act(·)
    h: torch.Tensor  # hidden state after the step


@dataclass(frozen=True)
class GRUConfig(RecurrentConfig):
    """A GRU's config: the recurrent fields (:class:`RecurrentConfig`; ``activation`` is the candidate n's) and:"""

    recurrent_activation: str = "sigmoid"  # runtime activation name, used for z and r
    reset_after: bool = True  # Keras `reset_after`: r multiplies (h U_n + b_hn), else h before U_n


class GRU(Recurrent, ConfigMixin, nn.GRU):
    r"""A Keras ``GRU`` layer as a PyTorch ``nn.GRU`` with Keras semantics.

    Keras packs its kernels ``[z, r, h]``; here they are PyTorch's ``[r, z, n]``. For each
    step t (in processing order), with ``W`` = ``weight_ih_l0``, ``U`` = ``weight_hh_l0``:

    .. math::
        r_t = σ(x_t W_r^T + b_{ir} + h_{t-1} U_r^T + b_{hr}) \\
        z_t = σ(x_t W_z^T + b_{iz} + h_{t-1} U_z^T + b_{hz}) \\
        n_t = act(x_t W_n^T + b_{in} + r_t ⊙ (h_{t-1} U_n^T + b_{hn}))  \quad  (reset\_after=True) \\
        n_t = act(x_t W_n^T + b_{in} + b_{hn} + (r_t ⊙ h_{t-1}) U_n^T)  \quad  (reset\_after=False) \\
        h_t = z_t ⊙ h_{t-1} + (1 - z_t) ⊙ n_t

    ``reset_after=True`` is exactly PyTorch's own GRU; ``reset_after=False`` (the Keras ≤ 2.2
    default) has no PyTorch kernel and always runs on the step loop.

    where σ is ``recurrent_activation`` and act is ``activation``. Keras' ``kernel`` and
    ``recurrent_kernel`` are ``weight_ih_l0.T`` and ``weight_hh_l0.T`` with gate blocks
    reordered. With ``reset_after=True`` the Keras bias ``(2, 3H)`` is ``bias_ih_l0`` (row 0)
    and ``bias_hh_l0`` (row 1); with ``reset_after=False`` the bias ``(3H,)`` is
    ``bias_ih_l0`` and ``bias_hh_l0`` is zero.

    Shapes (batch-first; swap N and L when ``time_major``):

    ============================  ===========================================
    input ``x``                   ``(N, L, F)``
    ``mask`` (optional, bool)     ``(N, L)``, True where a step is real
    ``initial_state`` (optional)  ``[h_0]``, ``(N, H)``
    output                        ``(N, L, H)`` if ``return_sequences`` else ``(N, H)``
    with ``return_state``         ``(output, h_n)``, ``h_n`` ``(N, H)``
    ============================  ===========================================

    Runs on the fused ``nn.GRU`` kernel when ``reset_after=True`` and the activations are
    tanh/sigmoid (contiguous masks included, by shifting each row's steps to the front); otherwise, and for masks
    with holes, on an exact step loop. Gates are computed only when asked for:
    ``return_gates=True``, or a forward hook on one of ``hook_z hook_r hook_n hook_h``.
    """

    Config = GRUConfig
    Gates = GRUGates
    GATE_NAMES = ("z", "r", "n", "h")
    _torch_rnn = nn.GRU

    def __init__(self, config: GRUConfig) -> None:
        super().__init__(config.input_size, config.hidden_size, bias=config.use_bias, batch_first=True)
        self.config = config
        self._act = get_activation(config.activation)
        self._ract = get_activation(config.recurrent_activation)
        self._fusable = config.reset_after and config.activation == "tanh" and config.recurrent_activation == "sigmoid"
        self._init_recurrent()

    # ------------------------------------------------------------------ cell
    def _input_bias(self) -> torch.Tensor | None:
        """The bias added to ``x W^T``: both biases when reset_after=False (all outside r)."""
        if not self.config.use_bias:
            return None
        if self.config.reset_after:
            return self.bias_ih_l0  # (3H,)
        return self.bias_ih_l0 + self.bias_hh_l0  # (3H,)

    def _input_projection(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih_l0, self._input_bias())  # (N, L, 3H) as [r, z, n]

    def _cell(self, xp: torch.Tensor, states: States, edit: StepEdit | None) -> tuple[States, States]:
        """One exact step (see the class docstring); ``edit`` replaces r and z as computed, then n, then h."""
        (h,) = states
        keep = (lambda name, v: v) if edit is None else edit
        hidden = self.config.hidden_size
        xr, xz, xn = xp.chunk(3, 1)  # (N, H) each
        if self.config.reset_after:
            hp = F.linear(h, self.weight_hh_l0, self.bias_hh_l0 if self.config.use_bias else None)  # (N, 3H)
            hr, hz, hn = hp.chunk(3, 1)
            r, z = keep("r", self._ract(xr + hr)), keep("z", self._ract(xz + hz))
            n = keep("n", self._act(xn + r * hn))
        else:
            hrz = h @ self.weight_hh_l0[: 2 * hidden].t()  # (N, 2H)
            hr, hz = hrz.chunk(2, 1)
            r, z = keep("r", self._ract(xr + hr)), keep("z", self._ract(xz + hz))
            n = keep("n", self._act(xn + (r * h) @ self.weight_hh_l0[2 * hidden :].t()))
        h_new = keep("h", torch.lerp(n, h, z))  # z h + (1 - z) n
        return (h_new,), (z, r, n)

    def _gates_from_outputs(self, x: torch.Tensor, states0: tuple[torch.Tensor, ...], seq: torch.Tensor) -> GRUGates:
        """Gates of an unmasked call from the fused kernel's outputs.

        Every ``h_{t-1}`` is known once the fused pass has run, so all pre-activations are
        batched matmuls over all steps; no recurrence remains.
        """
        hidden = self.config.hidden_size
        h_prev = torch.cat([states0[0].unsqueeze(1), seq[:, :-1]], dim=1)  # (N, L, H)
        xr, xz, xn = self._input_projection(x).chunk(3, dim=2)  # (N, L, H) each
        if self.config.reset_after:
            hr, hz, hn = F.linear(h_prev, self.weight_hh_l0, self.bias_hh_l0 if self.config.use_bias else None).chunk(
                3, dim=2
            )
            r, z = self._ract(xr + hr), self._ract(xz + hz)
            n = self._act(xn + r * hn)
        else:
            hr, hz = F.linear(h_prev, self.weight_hh_l0[: 2 * hidden]).chunk(2, dim=2)
            r, z = self._ract(xr + hr), self._ract(xz + hz)
            n = self._act(xn + F.linear(r * h_prev, self.weight_hh_l0[2 * hidden :]))
        return GRUGates(z, r, n, seq)

    def extra_repr(self) -> str:
        parts = self._repr_parts(("activation", "recurrent_activation"))
        if not self.config.reset_after:
            parts.append("reset_after=False")
        return ", ".join(parts)


register_module("GRU")(GRU)


def gru_reference(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None,
    bias_hh: torch.Tensor | None,
    reset_after: bool = True,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    h0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    zero_output_for_mask: bool = False,
) -> tuple[torch.Tensor, GRUGates]:
    """The plain step-by-step oracle of a GRU, one gate at a time, no tricks.

    Args:
        x: ``(N, L, F)`` in processing order.
        weight_ih, weight_hh: PyTorch layout ``(3H, F)``, ``(3H, H)``, gate blocks ``[r, z, n]``.
        bias_ih, bias_hh: ``(3H,)`` each, or None; with ``reset_after=False`` both are added
            outside the reset gate.
        mask: optional bool ``(N, L)``; masked steps carry the state.

    Returns:
        ``(seq, gates)``: the sequence output ``(N, L, H)`` and every gate ``(N, L, H)``.
    """
    act, ract = get_activation(activation), get_activation(recurrent_activation)
    n_rows, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    w_r, w_z, w_n = weight_ih.split(hidden, dim=0)
    u_r, u_z, u_n = weight_hh.split(hidden, dim=0)
    zeros3 = weight_ih.new_zeros(3 * hidden)
    bi_r, bi_z, bi_n = (zeros3 if bias_ih is None else bias_ih).split(hidden)
    bh_r, bh_z, bh_n = (zeros3 if bias_hh is None else bias_hh).split(hidden)
    h = x.new_zeros(n_rows, hidden) if h0 is None else h0
    prev = x.new_zeros(n_rows, hidden)
    rows: list[list[torch.Tensor]] = [[] for _ in range(5)]
    for t in range(steps):
        xt = x[:, t]
        r = ract(xt @ w_r.T + bi_r + h @ u_r.T + bh_r)
        z = ract(xt @ w_z.T + bi_z + h @ u_z.T + bh_z)
        if reset_after:
            cand = act(xt @ w_n.T + bi_n + r * (h @ u_n.T + bh_n))
        else:
            cand = act(xt @ w_n.T + bi_n + bh_n + (r * h) @ u_n.T)
        h_new = z * h + (1 - z) * cand
        keep = torch.ones(n_rows, 1, dtype=torch.bool, device=x.device) if mask is None else mask[:, t, None]
        zero = torch.zeros_like(h_new)
        h = torch.where(keep, h_new, h)
        out = torch.where(keep, h_new, zero if zero_output_for_mask else prev)
        prev = out
        for k, v in enumerate(
            (torch.where(keep, z, zero), torch.where(keep, r, zero), torch.where(keep, cand, zero), h, out)
        ):
            rows[k].append(v)
    stacked = [torch.stack(r_, dim=1) for r_ in rows]
    return stacked[4], GRUGates(*stacked[:4])
