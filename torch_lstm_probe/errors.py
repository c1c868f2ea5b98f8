"""The one hierarchy of errors raised by torch_lstm_probe and its converters."""

from __future__ import annotations

__all__ = [
    "TorchLstmProbeError",
    "KerasFileError",
    "UnsafeFileError",
    "FileLimitError",
    "UnsupportedLayerError",
    "UnsupportedOptionError",
    "WeightMismatchError",
    "GraphError",
    "InputError",
    "ProbeKeyError",
    "PortError",
    "MultipleErrors",
    "combine_errors",
    "MAX_MESSAGE_CHARS",
]


# Longest message an error keeps: configs may hold huge strings, and messages quote config values.
MAX_MESSAGE_CHARS = 8000


class TorchLstmProbeError(Exception):
    """Base class of every error this package raises on purpose.

    A message longer than ``MAX_MESSAGE_CHARS`` is shortened in the middle, so an error about a
    hostile file stays readable however long the values it quotes.
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str) and len(args[0]) > MAX_MESSAGE_CHARS:
            text = args[0]
            half = MAX_MESSAGE_CHARS // 2
            args = (f"{text[:half]} [... {len(text) - 2 * half} characters left out ...] {text[-half:]}", *args[1:])
        super().__init__(*args)


class KerasFileError(TorchLstmProbeError, ValueError):
    """The file is not a Keras model file, is damaged, or lacks what a model needs."""


class UnsafeFileError(KerasFileError):
    """The file asks for something loading never does: read another file (HDF5 external storage,
    external links, virtual datasets), run a filter plugin, or follow a link cycle."""


class FileLimitError(KerasFileError):
    """The file exceeds a safety limit of the readers (a size, a nesting depth, a read time)."""


class UnsupportedLayerError(TorchLstmProbeError, ValueError):
    """A layer class has no converter (and no ``custom_layers`` entry)."""


class UnsupportedOptionError(TorchLstmProbeError, ValueError):
    """A layer uses a config key or value that cannot be reproduced exactly."""


class WeightMismatchError(TorchLstmProbeError, ValueError):
    """Stored weights are missing, surplus, or do not have the shapes the config implies."""


class GraphError(TorchLstmProbeError, ValueError):
    """A model graph refers to tensors or layers that do not exist, or has a cycle."""


class InputError(TorchLstmProbeError, ValueError):
    """An input given to a converted model has the wrong rank, size or dtype."""


class ProbeKeyError(TorchLstmProbeError, KeyError):
    """A probe key names no layer, output or gate of the model."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MultipleErrors(TorchLstmProbeError):
    """Several errors raised at once (e.g. one per layer that cannot be converted).

    ``errors`` holds each one. An instance built by :func:`combine_errors` is also an instance of
    every kind it holds, so ``except WeightMismatchError`` catches a collection that contains a
    weight mismatch, whatever else it contains.
    """

    errors: tuple[TorchLstmProbeError, ...]

    def __reduce__(self) -> tuple[object, ...]:  # the class may be made on the fly: rebuild it by its kinds
        return (_rebuild_multiple, (self.args[0] if self.args else "", self.errors))


_MULTIPLE_CLASSES: dict[tuple[type[TorchLstmProbeError], ...], type[MultipleErrors]] = {}
_MAX_LISTED = 50  # errors spelled out in a combined message


def _multiple_class(kinds: tuple[type[TorchLstmProbeError], ...]) -> type[MultipleErrors]:
    cls = _MULTIPLE_CLASSES.get(kinds)
    if cls is None:
        name = "+".join(kind.__name__ for kind in kinds)
        cls = type(name, (MultipleErrors, *kinds), {"__module__": __name__, "__doc__": MultipleErrors.__doc__})
        _MULTIPLE_CLASSES[kinds] = cls
    return cls


def _rebuild_multiple(message: str, errors: tuple[TorchLstmProbeError, ...]) -> MultipleErrors:
    return _make_multiple(message, errors)


def _make_multiple(message: str, errors: tuple[TorchLstmProbeError, ...]) -> MultipleErrors:
    kinds: list[type[TorchLstmProbeError]] = []
    for err in errors:
        if type(err) not in kinds:
            kinds.append(type(err))
    combined = _multiple_class(tuple(sorted(kinds, key=lambda k: (k.__module__, k.__qualname__))))(message)
    combined.errors = errors
    return combined


def combine_errors(
    errors: list[TorchLstmProbeError] | tuple[TorchLstmProbeError, ...], header: str
) -> TorchLstmProbeError:
    """One exception for several: the error itself when there is one, else a :class:`MultipleErrors`.

    Combined errors inside ``errors`` are flattened, so nesting never repeats headers. The combined
    class derives from each distinct kind present (``UnsupportedLayerError+WeightMismatchError``),
    so existing ``except`` clauses for any of them keep working; ``.errors`` keeps every original.

    Args:
        errors: the errors, in the order they happened (at least one).
        header: the first line of the combined message, e.g. ``"3 layers cannot be converted:"``.
    """
    flat: list[TorchLstmProbeError] = []
    for err in errors:
        flat.extend(err.errors if isinstance(err, MultipleErrors) else (err,))
    if not flat:
        raise ValueError("combine_errors needs at least one error.")
    if len(flat) == 1:
        return flat[0]
    lines = [f"  - {err}" for err in flat[:_MAX_LISTED]]
    if len(flat) > _MAX_LISTED:
        lines.append(f"  ... and {len(flat) - _MAX_LISTED} more (see .errors)")
    return _make_multiple(header + "\n" + "\n".join(lines), tuple(flat))


class PortError(TorchLstmProbeError, ValueError):
    """A converted model cannot be written out as plain PyTorch source (``tlp.port``): a layer or
    option has no writer. The message names the layer, its class and the option."""
