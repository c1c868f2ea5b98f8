"""Converters for the Keras 3 audio front ends: STFTSpectrogram and MelSpectrogram.

=====================================  ================================  ================================
Keras value                            where the file keeps it           PyTorch
=====================================  ================================  ================================
STFTSpectrogram window, scaling,       weights ``real_kernel``,          buffers ``real_kernel``,
``periodic`` (baked into the DFT)      ``imag_kernel`` ``(L, 1, F)``     ``imag_kernel``
MelSpectrogram window, mel filters     config                            rebuilt from the config
=====================================  ================================  ================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import KerasFileError, UnsupportedOptionError
from torch_lstm_probe.layers.audio import MelSpectrogramConfig, STFTSpectrogramConfig

from .common import Context, ModuleSpec, check_keys, config_int, layer_label, to_tensor, unpack_weights
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_stft_spectrogram", "convert_mel_spectrogram"]

_STFT_MODES = ("log", "magnitude", "psd", "real", "imag", "angle", "stft")


def _choice(layer: LayerSpec, ctx: Context, key: str, default: Any, allowed: tuple[Any, ...]) -> Any:
    value = layer.config.get(key, default)
    if value not in allowed:
        raise UnsupportedOptionError(f"{layer_label(layer, ctx)}: {key} is {value!r}. Expected one of {list(allowed)}.")
    return value


def _number(layer: LayerSpec, ctx: Context, key: str, default: Any) -> float:
    value = layer.config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise UnsupportedOptionError(f"{layer_label(layer, ctx)}: {key} is {value!r}. Expected a finite number.")
    return float(value)


@register("STFTSpectrogram")
def convert_stft_spectrogram(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``STFTSpectrogram`` → :class:`torch_lstm_probe.layers.audio.STFTSpectrogram`.

    The saved kernels hold ``window[l] * cos(2*pi*f*l / n) / scale`` (real) and the matching
    ``-sin`` (imaginary), so ``window``, ``periodic`` and ``scaling`` need no formula here: the
    layer is a strided convolution with them. ``frame_step`` defaults to ``frame_length // 2``
    and ``fft_length`` to the next power of two of ``frame_length``; ``F = fft_length // 2 + 1``.
    """
    check_keys(
        layer,
        ctx,
        {"mode", "frame_length", "frame_step", "fft_length", "padding", "expand_dims", "data_format"},
        {"window", "periodic", "scaling"},  # baked into the saved kernels
    )
    mode = _choice(layer, ctx, "mode", "log", _STFT_MODES)
    padding = _choice(layer, ctx, "padding", "valid", ("valid", "same"))
    data_format = _choice(layer, ctx, "data_format", "channels_last", ("channels_last", "channels_first"))
    expand_dims = _choice(layer, ctx, "expand_dims", False, (False, True))
    frame_length = config_int(layer, ctx, "frame_length", 256)
    step = layer.config.get("frame_step")
    frame_step = frame_length // 2 if step is None else config_int(layer, ctx, "frame_step")
    fft = layer.config.get("fft_length")
    fft_length = 2 ** int(np.ceil(np.log2(frame_length))) if fft is None else config_int(layer, ctx, "fft_length")
    if not 1 <= frame_step <= frame_length or fft_length < frame_length:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: frame_step {frame_step}, frame_length {frame_length}, fft_length "
            f"{fft_length}. Expected 1 <= frame_step <= frame_length <= fft_length (Keras refuses the rest). The "
            "file is damaged or was edited."
        )
    num_bins = fft_length // 2 + 1
    shape = (frame_length, 1, num_bins)
    expected = {}
    if mode != "imag":
        expected["real_kernel"] = shape
    if mode != "real":
        expected["imag_kernel"] = shape
    weights = unpack_weights(layer, ctx, expected)
    config = STFTSpectrogramConfig(
        mode=str(mode),
        frame_length=frame_length,
        frame_step=frame_step,
        num_bins=num_bins,
        padding=str(padding),
        expand_dims=bool(expand_dims),
        data_format=str(data_format),
    )
    return ModuleSpec("STFTSpectrogram", config, {k: to_tensor(v) for k, v in weights.items()})


def _window(layer: LayerSpec, ctx: Context, length: int) -> str | tuple[float, ...] | None:
    """``window``: ``"hann"``, ``"hamming"``, None (rectangular) or ``length`` numbers."""
    value = layer.config.get("window", "hann")
    if value is None or value in ("hann", "hamming"):
        return value
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        inner = value.get("config")
        value = inner.get("value") if isinstance(inner, dict) else None
    if isinstance(value, (list, tuple)) and len(value) == length:
        try:
            values = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            values = None
        if values is not None and values.ndim == 1 and np.isfinite(values).all():
            return tuple(float(v) for v in values)
    shown = repr(value) if len(repr(value)) <= 100 else repr(value)[:97] + "..."
    raise UnsupportedOptionError(
        f"{layer_label(layer, ctx)}: window is {shown}. Expected 'hann', 'hamming', None or a list of "
        f"sequence_length={length} numbers (what Keras' TensorFlow STFT accepts)."
    )


@register("MelSpectrogram")
def convert_mel_spectrogram(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``MelSpectrogram`` → :class:`torch_lstm_probe.layers.audio.MelSpectrogram` (no weights:
    the window and the mel filter bank are rebuilt from the config).

    ``sequence_length`` defaults to ``fft_length`` and ``max_freq`` to ``int(sampling_rate / 2)``,
    as Keras resolves them before writing the config.
    """
    check_keys(
        layer,
        ctx,
        {"fft_length", "sequence_stride", "sequence_length", "window", "sampling_rate", "num_mel_bins"}
        | {"min_freq", "max_freq", "power_to_db", "top_db", "mag_exp", "min_power", "ref_power"},
        set(),
    )
    unpack_weights(layer, ctx, {})
    fft_length = config_int(layer, ctx, "fft_length", 2048)
    given = layer.config.get("sequence_length")
    sequence_length = fft_length if given is None else config_int(layer, ctx, "sequence_length")
    if sequence_length > fft_length:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: sequence_length {sequence_length} > fft_length {fft_length}. Keras refuses "
            "this: the file is damaged or was edited."
        )
    sampling_rate = _number(layer, ctx, "sampling_rate", 16000)
    max_freq = layer.config.get("max_freq")
    power_to_db = _choice(layer, ctx, "power_to_db", True, (True, False))
    config = MelSpectrogramConfig(
        fft_length=fft_length,
        sequence_stride=config_int(layer, ctx, "sequence_stride", 512),
        sequence_length=sequence_length,
        window=_window(layer, ctx, sequence_length),
        sampling_rate=sampling_rate,
        num_mel_bins=config_int(layer, ctx, "num_mel_bins", 128),
        min_freq=_number(layer, ctx, "min_freq", 20.0),
        max_freq=float(int(sampling_rate / 2)) if max_freq is None else _number(layer, ctx, "max_freq", None),
        power_to_db=bool(power_to_db),
        top_db=_number(layer, ctx, "top_db", 80.0) if power_to_db else 80.0,
        mag_exp=_number(layer, ctx, "mag_exp", 2.0),
        min_power=_number(layer, ctx, "min_power", 1e-10),
        ref_power=_number(layer, ctx, "ref_power", 1.0),
    )
    return ModuleSpec("MelSpectrogram", config)
