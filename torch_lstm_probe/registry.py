"""The registry of runtime module types, so a saved config can be rebuilt without Keras."""

from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar

from torch import nn

__all__ = ["MODULE_TYPES", "register_module", "build_module", "module_type_name", "ConfigurableModule"]


class ConfigurableModule(Protocol):
    """A runtime module that round-trips through a JSON-able config."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module: ...

    def get_config(self) -> dict[str, Any]: ...


MODULE_TYPES: dict[str, type[nn.Module]] = {}

T = TypeVar("T", bound=type[nn.Module])


def register_module(name: str) -> Callable[[T], T]:
    """Class decorator: registers a runtime module type under ``name`` (unique)."""

    def wrap(cls: T) -> T:
        if name in MODULE_TYPES:
            raise RuntimeError(f"Runtime module type {name!r} is registered twice.")
        MODULE_TYPES[name] = cls
        cls.module_type = name  # type: ignore[attr-defined]
        return cls

    return wrap


def module_type_name(module: nn.Module) -> str | None:
    """The registered type name of ``module``, or None for a foreign module."""
    name = getattr(type(module), "module_type", None)
    return name if MODULE_TYPES.get(name) is type(module) else None


def build_module(type_name: str, config: dict[str, Any]) -> nn.Module:
    """Builds a runtime module from its registered type name and config."""
    try:
        cls = MODULE_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(MODULE_TYPES))
        raise ValueError(f"Unknown runtime module type {type_name!r}. Known: {known}.") from None
    return cls.from_config(config)  # type: ignore[attr-defined]
