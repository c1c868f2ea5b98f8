"""Keras 3 op nodes (``keras.ops`` calls recorded in functional configs) as one runtime module.

Keras 3 writes ``keras.ops`` calls on symbolic tensors into the model config as nodes, e.g.
the mask of ``Embedding(mask_zero=True)`` becomes ``NotEqual(inputs, 0)``. :class:`Op` replays
one such call with NumPy semantics (axes include the batch axis). The call's arguments are a
template in which ``{"__tensor__": k}`` stands for the k-th tensor input and
``{"__slice__": [start, stop, step]}`` for a slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..registry import register_module
from .base import ConfigMixin

__all__ = ["Op", "OpConfig", "OPS"]

_DTYPES = {
    "bool": torch.bool,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def _axis(params: dict[str, Any]) -> Any:
    axis = params.get("axis")
    return tuple(axis) if isinstance(axis, list) else axis


def _reduce(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def run(x: torch.Tensor, **params: Any) -> torch.Tensor:
        axis, keepdims = _axis(params), bool(params.get("keepdims", False))
        if axis is None:
            return fn(x) if not keepdims else fn(x).reshape((1,) * x.dim())
        return fn(x, dim=axis, keepdim=keepdims)

    return run


def _amax(x: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return x.amax() if dim is None else x.amax(dim=dim, keepdim=keepdim)


def _amin(x: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return x.amin() if dim is None else x.amin(dim=dim, keepdim=keepdim)


def _any(x: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    x = x.bool()
    if dim is None:
        return x.any()
    dims = dim if isinstance(dim, tuple) else (dim,)
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = x.any(dim=d, keepdim=keepdim)
    return x


def _all(x: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return ~_any(~x.bool(), dim=dim, keepdim=keepdim)


def _cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
    target = _DTYPES.get(str(dtype))
    if target is None:
        raise ValueError(f"cast to unsupported dtype {dtype!r}")
    if target.is_floating_point and x.is_floating_point():
        return x  # keep the model's float precision (float32 or float64)
    if target.is_floating_point:
        return x.to(torch.get_default_dtype())
    return x.to(target)


def _convert_to_tensor(x: torch.Tensor, dtype: str | None = None) -> torch.Tensor:
    """``keras.ops.convert_to_tensor``: the identity, or a cast when a dtype is given."""
    return x if dtype is None else _cast(x, dtype)


def _softmax(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim=axis)


def _expand_dims(x: torch.Tensor, axis: Any) -> torch.Tensor:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    for a in sorted(a % (x.dim() + len(axes)) for a in axes):
        x = x.unsqueeze(a)
    return x


def _squeeze(x: torch.Tensor, axis: Any = None) -> torch.Tensor:
    if axis is None:
        return x.squeeze()
    return x.squeeze(tuple(axis) if isinstance(axis, list) else axis)


def _reshape(x: torch.Tensor, newshape: Any) -> torch.Tensor:
    return x.reshape(tuple(int(d) if d is not None else -1 for d in newshape))


def _transpose(x: torch.Tensor, axes: Any = None) -> torch.Tensor:
    return x.permute(*reversed(range(x.dim()))) if axes is None else x.permute(*axes)


def _concatenate(xs: list[torch.Tensor], axis: int = 0) -> torch.Tensor:
    return torch.cat(list(xs), dim=axis)


def _stack(xs: list[torch.Tensor], axis: int = 0) -> torch.Tensor:
    return torch.stack(list(xs), dim=axis)


def _get_item(x: torch.Tensor, key: Any) -> torch.Tensor:
    return x[key]


def _clip(x: torch.Tensor, x_min: float, x_max: float) -> torch.Tensor:
    return torch.clamp(x, x_min, x_max)


def _binary(fn: Callable[[Any, Any], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A binary op that also takes a Python number on either side (NumPy broadcasting)."""

    def run(a: Any, b: Any) -> torch.Tensor:
        like = a if isinstance(a, torch.Tensor) else b
        if not isinstance(a, torch.Tensor):
            a = torch.as_tensor(a, dtype=like.dtype if like.is_floating_point() else None, device=like.device)
        if not isinstance(b, torch.Tensor):
            b = torch.as_tensor(b, dtype=like.dtype if like.is_floating_point() else None, device=like.device)
        return fn(a, b)

    return run


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "not_equal": _binary(torch.ne),
    "equal": _binary(torch.eq),
    "greater": _binary(torch.gt),
    "greater_equal": _binary(torch.ge),
    "less": _binary(torch.lt),
    "less_equal": _binary(torch.le),
    "logical_and": _binary(torch.logical_and),
    "logical_or": _binary(torch.logical_or),
    "logical_not": torch.logical_not,
    "add": _binary(torch.add),
    "subtract": _binary(torch.sub),
    "multiply": _binary(torch.mul),
    "divide": _binary(torch.true_divide),
    "power": _binary(torch.pow),
    "maximum": _binary(torch.maximum),
    "minimum": _binary(torch.minimum),
    "matmul": _binary(torch.matmul),
    "negative": torch.neg,
    "abs": torch.abs,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "square": torch.square,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "softmax": _softmax,
    "any": _reduce(_any),
    "all": _reduce(_all),
    "mean": _reduce(torch.mean),
    "sum": _reduce(torch.sum),
    "max": _reduce(_amax),
    "min": _reduce(_amin),
    "cast": _cast,
    "convert_to_tensor": _convert_to_tensor,
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "reshape": _reshape,
    "transpose": _transpose,
    "concatenate": _concatenate,
    "stack": _stack,
    "get_item": _get_item,
    "where": torch.where,
    "zeros_like": torch.zeros_like,
    "ones_like": torch.ones_like,
    "clip": _clip,
}


@dataclass(frozen=True)
class OpConfig:
    op: str  # key of OPS
    args: list[Any] = field(default_factory=list)  # argument template (tensors as {"__tensor__": k})
    params: dict[str, Any] = field(default_factory=dict)  # constant keyword arguments (axis, dtype, ...)


def _fill(template: Any, tensors: tuple[torch.Tensor, ...]) -> Any:
    if isinstance(template, dict):
        if "__tensor__" in template:
            return tensors[template["__tensor__"]]
        if "__slice__" in template:
            return slice(*template["__slice__"])
        return {k: _fill(v, tensors) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return [_fill(v, tensors) for v in template]
    return template


@register_module("Op")
class Op(ConfigMixin, torch.nn.Module):
    """One ``keras.ops`` call; see the module docstring."""

    Config = OpConfig

    def __init__(self, config: OpConfig) -> None:
        super().__init__()
        if config.op not in OPS:
            raise ValueError(f"Unknown op {config.op!r}. Known: {', '.join(sorted(OPS))}.")
        self.config = config
        self._fn = OPS[config.op]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Op:
        return cls(OpConfig(op=config["op"], args=list(config.get("args", [])), params=dict(config.get("params", {}))))

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        args = _fill(list(self.config.args), tensors)
        params = _fill(dict(self.config.params), tensors)
        if self.config.op == "get_item":
            key = args[1]
            args = [args[0], tuple(key) if isinstance(key, list) else key]
        return self._fn(*args, **params)

    def extra_repr(self) -> str:
        return f"{self.config.op}, params={self.config.params}"
