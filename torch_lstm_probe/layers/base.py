"""What every runtime layer shares: a frozen config, its JSON round trip, and its Keras name."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..errors import InputError

__all__ = ["ConfigMixin", "HookPoint", "check_float_input", "run_fused_kernel"]


class ConfigMixin:
    """Mixin for runtime modules built from a frozen dataclass ``Config``.

    ``keras_name`` is the Keras layer name (or graph path) the module stands for. The model
    container sets it; errors quote it so a user knows which layer rejected an input.
    """

    Config: ClassVar[type]
    config: Any
    keras_name: str = ""

    # How the graph executor treats a Keras mask arriving at this layer:
    # "drop": the layer does not support masking, the mask stops here;
    # "pass": the layer keeps the time axis and passes the mask on unchanged;
    # "custom": the layer defines compute_mask(inputs, mask) (and may take mask= in forward).
    mask_mode: ClassVar[str] = "drop"
    # True when forward() accepts a ``mask=`` keyword argument.
    takes_mask: ClassVar[bool] = False
    # True when the layer reads integer indices (its graph inputs stay integer).
    takes_indices: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(f"{cls.__name__} config has unknown keys {unknown}; known: {sorted(fields)}.")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        return cls(cls.Config(**values))  # type: ignore[call-arg]

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def describe(self) -> str:
        """The Keras layer name for messages, falling back to the class name."""
        return f"layer {self.keras_name!r} ({type(self).__name__})" if self.keras_name else type(self).__name__


class HookPoint(nn.Identity):
    """A named identity module: register a forward hook on it to read the value passing through
    (a gate's hook may also return a replacement; see ``Recurrent._fire_gate_hooks``)."""

    def has_hooks(self) -> bool:
        return bool(self._forward_hooks or self._forward_pre_hooks)


def check_float_input(
    layer: ConfigMixin, x: torch.Tensor, rank: int | tuple[int, ...], last: int | None, what: str
) -> None:
    """Raises InputError unless ``x`` is a floating tensor of the given rank and last-axis size."""
    ranks = (rank,) if isinstance(rank, int) else rank
    if x.dim() not in ranks:
        raise InputError(
            f"{layer.describe()} expects {what}. Received a tensor of shape {tuple(x.shape)} "
            f"(rank {x.dim()}). Expected rank {' or '.join(map(str, ranks))}."
        )
    if last is not None and x.shape[-1] != last:
        raise InputError(
            f"{layer.describe()} expects {what} with {last} features on the last axis. "
            f"Received shape {tuple(x.shape)}. Fix: feed inputs whose last axis has size {last}."
        )
    if not x.is_floating_point():
        raise InputError(f"{layer.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")


def run_fused_kernel(module: nn.Module, kernel: Callable[..., Any], x: Any, hx: Any) -> Any:
    """Calls a PyTorch RNN's fused ``forward`` (``kernel``) on ``module``.

    cuDNN refuses to backpropagate through an RNN run in eval mode. The converted layers have
    dropout 0, so training mode computes exactly the same thing: when gradients are wanted on
    CUDA, the kernel runs in training mode and the module's mode is restored afterwards.
    """
    device = hx[0].device if isinstance(hx, tuple) else hx.device
    if module.training or not torch.is_grad_enabled() or device.type != "cuda":
        return kernel(module, x, hx)
    module.training = True
    try:
        return kernel(module, x, hx)
    finally:
        module.training = False
