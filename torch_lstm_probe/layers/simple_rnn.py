"""Keras ``SimpleRNN`` with Keras semantics on PyTorch's fused ``nn.RNN`` kernel.

Shape legend used in the comments of this file:

    N = batch size, L = time steps, F = input features, H = units (hidden size).
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

__all__ = ["SimpleRNN", "SimpleRNNConfig", "SimpleRNNGates", "simple_rnn_reference"]


class SimpleRNNGates(NamedTuple):
    """Per-step state of one SimpleRNN call, ``(N, L, H)`` in processing order.

    At masked steps ``h`` holds the carried state.
    """

    h: torch.Tensor  # hidden state after the step


@dataclass(frozen=True)
class SimpleRNNConfig(RecurrentConfig):
    """A SimpleRNN's config: the recurrent fields (:class:`RecurrentConfig`) and nothing more."""


_TORCH_NONLINEARITY = {"tanh": "tanh", "relu": "relu"}


class SimpleRNN(Recurrent, ConfigMixin, nn.RNN):
    r"""A Keras ``SimpleRNN`` layer as a PyTorch ``nn.RNN`` with Keras semantics.

    For each step t (in processing order):

    .. math::
        h_t = act(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

    where act is ``activation``. Keras' ``kernel`` is ``weight_ih_l0.T``, its
    ``recurrent_kernel`` is ``weight_hh_l0.T`` and its bias is ``bias_ih_l0`` (``bias_hh_l0``
    is zero after conversion).

    Shapes (batch-first; swap N and L when ``time_major``):

    ============================  ===========================================
    input ``x``                   ``(N, L, F)``
    ``mask`` (optional, bool)     ``(N, L)``, True where a step is real
    ``initial_state`` (optional)  ``[h_0]``, ``(N, H)``
    output                        ``(N, L, H)`` if ``return_sequences`` else ``(N, H)``
    with ``return_state``         ``(output, h_n)``, ``h_n`` ``(N, H)``
    ============================  ===========================================

    Runs on the fused ``nn.RNN`` kernel when the activation is tanh or relu (contiguous masks
    included); otherwise, and for masks with holes, on an exact step loop. The only "gate" is
    ``h`` (hook point ``hook_h``), computed only when asked for.
    """

    Config = SimpleRNNConfig
    Gates = SimpleRNNGates
    GATE_NAMES = ("h",)
    _torch_rnn = nn.RNN

    def __init__(self, config: SimpleRNNConfig) -> None:
        nonlinearity = _TORCH_NONLINEARITY.get(config.activation, "tanh")  # unused when not fusable
        super().__init__(
            config.input_size, config.hidden_size, nonlinearity=nonlinearity, bias=config.use_bias, batch_first=True
        )
        self.config = config
        self._act = get_activation(config.activation)
        self._fusable = config.activation in _TORCH_NONLINEARITY
        self._init_recurrent()

    def _bias(self) -> torch.Tensor | None:
        if not self.config.use_bias:
            return None
        return self.bias_ih_l0 + self.bias_hh_l0  # (H,)

    def _input_projection(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih_l0, self._bias())  # (N, L, H)

    def _cell(self, xp: torch.Tensor, states: States, edit: StepEdit | None) -> tuple[States, States]:
        h = self._act(torch.addmm(xp, states[0], self.weight_hh_l0.t()))  # (N, H)
        return (h if edit is None else edit("h", h),), ()

    def _gates_from_outputs(
        self, x: torch.Tensor, states0: tuple[torch.Tensor, ...], seq: torch.Tensor
    ) -> SimpleRNNGates:
        return SimpleRNNGates(seq)

    def extra_repr(self) -> str:
        return ", ".join(self._repr_parts(("activation",)))


register_module("SimpleRNN")(SimpleRNN)


def simple_rnn_reference(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str = "tanh",
    h0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    zero_output_for_mask: bool = False,
) -> tuple[torch.Tensor, SimpleRNNGates]:
    """The plain step-by-step oracle of a SimpleRNN, no tricks.

    Args:
        x: ``(N, L, F)`` in processing order.
        weight_ih, weight_hh, bias: PyTorch layout ``(H, F)``, ``(H, H)``, ``(H,)``.
        mask: optional bool ``(N, L)``; masked steps carry the state.

    Returns:
        ``(seq, gates)``: the sequence output ``(N, L, H)`` and ``h`` ``(N, L, H)``.
    """
    act = get_activation(activation)
    n, steps, _ = x.shape
    hidden = weight_hh.shape[0]
    h = x.new_zeros(n, hidden) if h0 is None else h0
    prev = x.new_zeros(n, hidden)
    outs, hs = [], []
    for t in range(steps):
        z = x[:, t] @ weight_ih.T + h @ weight_hh.T
        if bias is not None:
            z = z + bias
        h_new = act(z)
        keep = torch.ones(n, 1, dtype=torch.bool, device=x.device) if mask is None else mask[:, t, None]
        h = torch.where(keep, h_new, h)
        out = torch.where(keep, h_new, torch.zeros_like(h_new) if zero_output_for_mask else prev)
        prev = out
        outs.append(out)
        hs.append(h)
    return torch.stack(outs, dim=1), SimpleRNNGates(torch.stack(hs, dim=1))
