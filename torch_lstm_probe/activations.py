"""Element-wise activations, by the runtime names that converters resolve Keras names to.

Keras names are version dependent (``hard_sigmoid`` and ``gelu`` changed formulas in Keras 3),
so converters never pass a Keras name through: they map it, together with the file's
``keras_version``, to one of the unambiguous runtime names below.

| runtime name          | formula                                   |
| --------------------- | ----------------------------------------- |
| ``keras2_hard_sigmoid`` | ``clip(0.2 x + 0.5, 0, 1)`` (Keras 1/2, tf.keras, tf_keras) |
| ``keras3_hard_sigmoid`` | ``clip(x / 6 + 0.5, 0, 1)`` (Keras 3)    |
| ``gelu_erf``          | ``x Φ(x)``                               |
| ``gelu_tanh``         | tanh approximation of GELU                |
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["ACTIVATIONS", "get_activation", "inplace_activation", "is_identity"]

Activation = Callable[[torch.Tensor], torch.Tensor]


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x


def _keras2_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def _keras3_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.hardsigmoid(x)


def _keras3_hard_silu(x: torch.Tensor) -> torch.Tensor:
    return x * F.hardsigmoid(x)


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def _log_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, dim=-1)


def _keras3_leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.2)


def _keras2_softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _tanh_shrink(x: torch.Tensor) -> torch.Tensor:
    return x - torch.tanh(x)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu(x: torch.Tensor) -> torch.Tensor:
    return _SELU_SCALE * torch.where(x > 0, x, _SELU_ALPHA * torch.expm1(x))


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.logsigmoid(x)


def _sparse_plus(x: torch.Tensor) -> torch.Tensor:
    # 0 for x <= -1, x for x >= 1, (x + 1)^2 / 4 in between (Keras 3 sparse_plus).
    return torch.where(x <= -1, torch.zeros_like(x), torch.where(x >= 1, x, (x + 1) ** 2 / 4))


def _squareplus(x: torch.Tensor) -> torch.Tensor:
    return (x + torch.sqrt(x * x + 4.0)) / 2


def _soft_shrink(x: torch.Tensor) -> torch.Tensor:
    return F.softshrink(x, 0.5)


def _hard_shrink(x: torch.Tensor) -> torch.Tensor:
    return F.hardshrink(x, 0.5)


def _hard_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, -1.0, 1.0)


def _celu(x: torch.Tensor) -> torch.Tensor:
    return F.celu(x, alpha=1.0)


def _glu(x: torch.Tensor) -> torch.Tensor:
    return F.glu(x, dim=-1)


ACTIVATIONS: dict[str, Activation] = {
    "linear": _linear,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": _selu,
    "softsign": F.softsign,
    "softplus": _keras2_softplus,
    "swish": F.silu,
    "exponential": torch.exp,
    "mish": F.mish,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "log_sigmoid": _log_sigmoid,
    "keras2_hard_sigmoid": _keras2_hard_sigmoid,
    "keras3_hard_sigmoid": _keras3_hard_sigmoid,
    "keras3_hard_silu": _keras3_hard_silu,
    "keras3_leaky_relu": _keras3_leaky_relu,
    "gelu_erf": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "tanh_shrink": _tanh_shrink,
    "sparse_plus": _sparse_plus,
    "squareplus": _squareplus,
    "soft_shrink": _soft_shrink,
    "hard_shrink": _hard_shrink,
    "hard_tanh": _hard_tanh,
    "celu": _celu,
    "glu": _glu,
}


def get_activation(name: str) -> Activation:
    """Returns the activation registered under a runtime ``name``.

    Raises:
        ValueError: the name is not a runtime activation name.
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"Unknown runtime activation {name!r}. Known: {known}.") from None


def is_identity(name: str) -> bool:
    """True for the ``linear`` activation, which layers may skip entirely."""
    return name == "linear"


_INPLACE: dict[str, Callable[[torch.Tensor], object]] = {
    "sigmoid": torch.Tensor.sigmoid_,
    "tanh": torch.Tensor.tanh_,
    "relu": torch.Tensor.relu_,
    "linear": lambda x: x,
}


def inplace_activation(name: str) -> Callable[[torch.Tensor], object]:
    """Applies the runtime activation ``name`` in place (on a view, writing through to its base)."""
    fast = _INPLACE.get(name)
    if fast is not None:
        return fast
    fn = get_activation(name)

    def apply(x: torch.Tensor) -> object:
        return x.copy_(fn(x))

    return apply
