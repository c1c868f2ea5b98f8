"""Saves and loads a converted model as one safetensors file: weights plus the JSON config."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode

from .errors import GraphError, KerasFileError, TorchLstmProbeError, WeightMismatchError
from .model import KerasModel

__all__ = ["save", "load", "CONFIG_KEY", "FORMAT_KEY"]

CONFIG_KEY = "torch_lstm_probe.config"
FORMAT_KEY = "torch_lstm_probe.format"
FORMAT_VERSION = "1"


def save(model: KerasModel, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Writes ``model`` to ``path``: its state_dict as tensors, its config as JSON metadata.

    Raises:
        TypeError: a layer is a custom module without a config.
    """
    config = model.get_config()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {CONFIG_KEY: json.dumps(config), FORMAT_KEY: FORMAT_VERSION}
    info: dict[str, Any] = model.source_info
    meta.update({f"source.{k}": str(v) for k, v in info.items()})
    meta.update(metadata or {})
    save_file(tensors, str(path), metadata=meta)


# Elements a model may hold beyond the file's tensors (buffers not saved, e.g. stateful layers' states).
_UNSAVED_ELEMENTS = 1 << 24


class _SkipInitOnMeta(TorchFunctionMode):
    """Skips in-place initializers (``normal_``, ``uniform_``, ...) of meta tensors, which hold no data:
    the first ``normal_`` on a meta tensor would otherwise import torch's compiler stack (about 2 s)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")
        if name.endswith("_") and not name.startswith("_") and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def _check_sizes(path: Path, config: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Builds the model on the meta device (which allocates nothing) and checks that the file's
    tensors fill it, so that a config cannot make the real build allocate more than the file holds."""
    with torch.device("meta"), _SkipInitOnMeta():
        skeleton = KerasModel.from_config(config)  # no load-time run on meta tensors
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(t.shape) for k, t in tensors.items()}
    if expected != stored:
        missing = sorted(set(expected) - set(stored))
        unexpected = sorted(set(stored) - set(expected))
        wrong = sorted(
            f"{k}: {stored[k]} (expected {expected[k]})"
            for k in set(expected) & set(stored)
            if expected[k] != stored[k]
        )
        raise WeightMismatchError(
            f"{path}: the tensors do not fit the model config. Missing: {missing[:20]}; unexpected: {unexpected[:20]}; "
            f"wrong shapes: {wrong[:20]}."
        )
    held = sum(t.numel() for t in tensors.values())
    needed = sum(p.numel() for p in skeleton.parameters()) + sum(b.numel() for b in skeleton.buffers())
    if needed > held + _UNSAVED_ELEMENTS:
        raise KerasFileError(
            f"{path}: the model config asks for {needed} parameter and buffer elements, but the file holds {held}. "
            "The file is damaged or crafted."
        )


def load(path: str | os.PathLike[str], device: torch.device | str | None = None) -> KerasModel:
    """Loads a model written by :func:`save`; needs neither Keras nor TensorFlow.

    Raises:
        FileNotFoundError: the path does not exist.
        KerasFileError: not a safetensors file written by :func:`save`, or its config cannot be built.
        GraphError: the config's graph is malformed, or its layers do not fit together.
        WeightMismatchError: the stored tensors do not fit the config.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Model file not found: {path}")
    if not path.is_file():  # a FIFO would block the read, a device would never end
        raise KerasFileError(f"{path}: not a regular file. Expected a .safetensors file written by tlp.save.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError for damaged files
        raise KerasFileError(f"{path}: not a readable safetensors file ({err}).") from err
    if CONFIG_KEY not in meta:
        raise KerasFileError(
            f"{path}: a safetensors file without a torch_lstm_probe model config (not written by tlp.save)."
        )
    try:
        config = json.loads(meta[CONFIG_KEY])
    except (ValueError, RecursionError) as err:
        raise KerasFileError(f"{path}: the model config in the metadata is not valid JSON ({err}).") from err
    try:
        _check_sizes(path, config, tensors)
        model = KerasModel.from_config(config)
    except GraphError as err:
        raise GraphError(f"{path}: {err}") from err
    except TorchLstmProbeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RuntimeError) as err:
        raise KerasFileError(
            f"{path}: the model config in the metadata cannot be built ({type(err).__name__}: {err}). "
            "The file is damaged, or was not written by tlp.save of this version."
        ) from err
    floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
    model.to(dtype=floating[0] if floating else torch.float32)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise WeightMismatchError(f"{path}: the tensors do not fit the model config: {err}") from err
    model.source_info = {k[len("source.") :]: v for k, v in meta.items() if k.startswith("source.")}
    return model.to(device=device).eval()
