"""Core Keras layers at inference: Dense, Embedding, Dropout, Activation, TimeDistributed, and the
adapter that lets a user's module stand for the recurrent layer inside a Bidirectional."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation, is_identity
from ..errors import InputError
from ..registry import build_module, module_type_name, register_module
from ..tracing import is_tracing
from .base import ConfigMixin, check_float_input

__all__ = [
    "Dense",
    "Embedding",
    "Dropout",
    "Activation",
    "TimeDistributed",
    "Masking",
    "CustomRecurrent",
    "CustomRecurrentConfig",
]


@dataclass(frozen=True)
class DenseConfig:
    in_features: int  # rows of the Keras kernel
    out_features: int  # Keras `units`
    use_bias: bool = True  # Keras `use_bias`
    activation: str = "linear"  # runtime activation name


@register_module("Dense")
class Dense(ConfigMixin, nn.Linear):
    """Keras ``Dense``: ``act(x @ kernel + bias)`` on the last axis of an input of any rank.

    ``weight = kernel.T`` ``(out, in)``; ``bias = bias``. Input ``(N, *, in)`` → ``(N, *, out)``.
    """

    Config = DenseConfig
    mask_mode = "pass"

    def __init__(self, config: DenseConfig) -> None:
        super().__init__(config.in_features, config.out_features, bias=config.use_bias)
        self.config = config
        self._act = None if is_identity(config.activation) else get_activation(config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        check_float_input(self, x, tuple(range(2, 9)), self.in_features, "an input (batch, ..., features)")
        y = F.linear(x, self.weight, self.bias)
        return y if self._act is None else self._act(y)


@dataclass(frozen=True)
class EmbeddingConfig:
    num_embeddings: int  # Keras `input_dim`
    embedding_dim: int  # Keras `output_dim`
    mask_zero: bool = False  # index 0 yields a False mask (row 0 stays a learned row)
    wrap_negative: bool = False  # Keras 3: index -k reads row V-k (ops.take); Keras 2 refuses negatives


@register_module("Embedding")
class Embedding(ConfigMixin, nn.Embedding):
    """Keras ``Embedding``: integer indices ``(N, *)`` → ``(N, *, D)``; ``weight = embeddings``.

    Accepts any integer dtype, and floats, which Keras casts to int32 by truncation toward zero
    (``1.7 → 1``, ``-0.5 → 0``); the mask of ``mask_zero`` is computed on the values as given,
    as Keras computes it (``0.5`` is unmasked though it reads row 0). Keras 3 reads a negative
    index ``-k`` as row ``V - k`` (``wrap_negative``); Keras 2 refuses it. Indices outside
    ``[0, V)`` (``[-V, V)`` when wrapping), NaN and infinities raise :class:`InputError`, as Keras
    raises, instead of reading garbage.
    """

    Config = EmbeddingConfig
    mask_mode = "custom"
    takes_indices = True

    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__(config.num_embeddings, config.embedding_dim)
        self.config = config

    def compute_mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        return (x != 0) if self.config.mask_zero else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        checks = not is_tracing()  # value checks read the data: eager only (a traced graph has none)
        if x.is_floating_point():
            if checks and x.numel() and not bool(torch.isfinite(x).all()):
                raise InputError(
                    f"{self.describe()} expects token indices. Received NaN or infinite values, which Keras "
                    "cannot cast to an index either."
                )
            x = x.trunc().long()  # Keras casts to int32: truncation toward zero
        elif x.dtype in (torch.bool, torch.complex64, torch.complex128):
            raise InputError(f"{self.describe()} expects integer token indices. Received dtype {x.dtype}.")
        vocab = self.num_embeddings
        low = -vocab if self.config.wrap_negative else 0
        if not checks:
            if low:
                x = torch.where(x < 0, x + vocab, x)  # (N, *): Keras 3's ops.take wraps negatives
        elif x.numel():
            lo, hi = int(x.min()), int(x.max())
            if lo < low or hi >= vocab:
                raise InputError(
                    f"{self.describe()} has input_dim {vocab}: indices must lie in [{low}, {vocab - 1}]"
                    + (" (Keras 3 reads -k as row input_dim - k)" if low else "")
                    + f". Received indices from {lo} to {hi}."
                )
            if lo < 0:
                x = torch.where(x < 0, x + vocab, x)  # (N, *): Keras 3's ops.take wraps negatives
        return F.embedding(x, self.weight)  # (N, *, D)


@dataclass(frozen=True)
class DropoutConfig:
    rate: float = 0.0  # Keras `rate`; unused at inference
    keeps_mask: bool = True  # False for layers that do not support masking (the mask stops here)


@register_module("Dropout")
class Dropout(ConfigMixin, nn.Module):
    """Keras ``Dropout``/``SpatialDropout1D`` at inference: the identity."""

    Config = DropoutConfig
    mask_mode = "pass"

    def __init__(self, config: DropoutConfig) -> None:
        super().__init__()
        self.config = config
        self.mask_mode = "pass" if config.keeps_mask else "drop"  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"rate={self.config.rate} (identity at inference)"


@dataclass(frozen=True)
class ActivationConfig:
    activation: str = "linear"  # runtime activation name


@register_module("Activation")
class Activation(ConfigMixin, nn.Module):
    """Keras ``Activation``: applies a named activation element-wise (softmax on the last axis)."""

    Config = ActivationConfig
    mask_mode = "pass"

    def __init__(self, config: ActivationConfig) -> None:
        super().__init__()
        self.config = config
        self._act = get_activation(config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._act(x)

    def extra_repr(self) -> str:
        return repr(self.config.activation)


@dataclass(frozen=True)
class TimeDistributedConfig:
    layer: dict[str, Any]  # {"type": runtime module type, "config": its config}


@register_module("TimeDistributed")
class TimeDistributed(ConfigMixin, nn.Module):
    """Keras ``TimeDistributed``: applies ``layer`` to every time step of ``(N, L, ...)``.

    The batch and time axes are merged, the inner layer runs on ``(N*L, ...)``, and the result
    is split back to ``(N, L, ...)``.
    """

    Config = TimeDistributedConfig
    mask_mode = "pass"

    def __init__(self, config: TimeDistributedConfig, layer: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.layer = layer if layer is not None else build_module(config.layer["type"], config.layer["config"])

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        return cls(TimeDistributedConfig(layer=dict(config["layer"])))

    def get_config(self) -> dict[str, Any]:
        type_name = module_type_name(self.layer)
        if type_name is None:
            raise TypeError(f"TimeDistributed wraps a foreign module {type(self.layer).__name__}; it has no config.")
        return {"layer": {"type": type_name, "config": self.layer.get_config()}}  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise InputError(
                f"{self.describe()} expects an input (batch, time, ...) of rank 3 or more. "
                f"Received shape {tuple(x.shape)}."
            )
        n, steps = x.shape[:2]
        y = self.layer(x.reshape(n * steps, *x.shape[2:]))  # (N*L, ...)
        return y.reshape(n, steps, *y.shape[1:])  # (N, L, ...)


@dataclass(frozen=True)
class MaskingConfig:
    mask_value: float = 0.0  # a step is masked when all its features equal this value


@register_module("Masking")
class Masking(ConfigMixin, nn.Module):
    """Keras ``Masking``: masks a step whose features all equal ``mask_value`` and zeroes it.

    Input ``(N, L, ...)``; mask ``(N, L)`` is True where any feature differs from the value.
    """

    Config = MaskingConfig
    mask_mode = "custom"

    def __init__(self, config: MaskingConfig) -> None:
        super().__init__()
        self.config = config

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        return (x != self.config.mask_value).flatten(2).any(-1) if x.dim() > 2 else x != self.config.mask_value

    def compute_mask(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._keep(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = self._keep(x)  # (N, L)
        return x * keep.reshape(keep.shape + (1,) * (x.dim() - 2)).to(x.dtype)


@dataclass(frozen=True)
class CustomRecurrentConfig:
    return_sequences: bool = False  # the wrapped Keras layer's `return_sequences`
    return_state: bool = False  # always False: a user's module declares no states
    stateful: bool = False  # the wrapped Keras layer's `stateful`
    time_major: bool = False  # the wrapped Keras layer's `time_major` (Keras 2)
    go_backwards: bool = False  # the wrapped Keras layer's `go_backwards` (the module must honour it)


class CustomRecurrent(ConfigMixin, nn.Module):
    """A user's module (from ``custom_layers``) standing for one half of a ``Bidirectional``.

    ``Bidirectional`` reads the recurrent flags from :class:`CustomRecurrentConfig` (taken from
    the Keras config of the half) and calls ``layer(x)`` with ``x`` ``(N, L, F)`` in Keras layout.
    The module returns what the Keras layer returns: ``(N, L, H)`` with ``return_sequences``
    (for the backward half in reversed time, as ``go_backwards`` gives), else ``(N, H)``.
    A mask ``(N, L)`` is passed as ``mask=`` when the module's ``forward`` takes a ``mask``
    argument, as Keras passes it only to layers whose ``call`` takes one; a mask reaching a module
    without it is an :class:`InputError`, not silently dropped. It has no gate hook points, and it
    is not saved by ``tlp.save`` (a user's module has no config).
    """

    Config = CustomRecurrentConfig
    STATE_NAMES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: CustomRecurrentConfig, layer: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.layer = layer
        try:
            params = inspect.signature(layer.forward).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        self._takes_mask = "mask" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        raise TypeError("CustomRecurrent wraps a user's module; it cannot be rebuilt from a config.")

    def get_config(self) -> dict[str, Any]:
        raise TypeError(
            f"{self.describe()} is a custom module ({type(self.layer).__name__}) with no saved config. "
            "Models with custom_layers cannot be saved by tlp.save; save the state_dict instead."
        )

    def reset_states(self) -> None:
        """Calls the user's ``reset_states()`` when the module has one."""
        reset = getattr(self.layer, "reset_states", None)
        if callable(reset):
            reset()

    def forward(
        self,
        x: torch.Tensor,
        initial_state: Sequence[torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        return_gates: bool = False,
    ) -> Any:
        if initial_state is not None:
            raise InputError(f"{self.describe()} is a custom module: it takes no initial_state.")
        kwargs: dict[str, Any] = {}
        if mask is not None:
            if not self._takes_mask:
                raise InputError(
                    f"{self.describe()} receives a mask, but the custom module {type(self.layer).__name__} takes "
                    "no `mask` argument, so masked steps would be computed. Fix: add `mask=None` to its forward."
                )
            kwargs["mask"] = mask
        y = self.layer(x, **kwargs)  # (N, L, H) or (N, H)
        return (y, None) if return_gates else y
