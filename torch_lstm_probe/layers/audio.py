"""Keras 3 audio front ends at inference: STFTSpectrogram and MelSpectrogram.

Neither layer supports masking: a mask stops at them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin

__all__ = [
    "STFTSpectrogram",
    "STFTSpectrogramConfig",
    "MelSpectrogram",
    "MelSpectrogramConfig",
    "mel_weight_matrix",
    "raised_cosine_window",
]

KERAS_EPSILON = 1e-7  # keras.backend.epsilon()


def _check_float(layer: ConfigMixin, x: torch.Tensor, ranks: tuple[int, ...], what: str) -> None:
    if x.dim() not in ranks:
        raise InputError(
            f"{layer.describe()} expects {what}. Received a tensor of shape {tuple(x.shape)} (rank {x.dim()}). "
            f"Expected rank {' or '.join(map(str, ranks))}."
        )
    if not x.is_floating_point():
        raise InputError(
            f"{layer.describe()} expects float16, float32 or float64 samples (Keras refuses other dtypes). "
            f"Received dtype {x.dtype}."
        )


# ---------------------------------------------------------------------------- STFTSpectrogram


@dataclass(frozen=True)
class STFTSpectrogramConfig:
    mode: str  # "log", "magnitude", "psd", "real", "imag", "angle" or "stft"
    frame_length: int  # L: samples per frame (the kernel length)
    frame_step: int  # s: samples between frame starts
    num_bins: int  # F = fft_length // 2 + 1 frequency bins
    padding: str = "valid"  # "valid" or "same" (TensorFlow's SAME: the extra sample goes right)
    expand_dims: bool = False  # keep channels on their own axis
    data_format: str = "channels_last"  # (N, T, C) or (N, C, T)


@register_module("STFTSpectrogram")
class STFTSpectrogram(ConfigMixin, nn.Module):
    """Keras 3 ``STFTSpectrogram``: a strided convolution of each channel with the saved kernels.

    With ``K_re, K_im`` the saved kernels ``(L, 1, F)`` (window, DFT and scaling baked in by Keras),
    each channel ``c`` gives ``R[f, t] = sum_l x[t*s + l - p, c] * K_re[l, 0, f]`` and ``I`` likewise,
    where ``p`` is 0 for ``valid`` and ``floor(max((ceil(T/s) - 1)*s + L - T, 0) / 2)`` for ``same``
    (zeros outside the signal). With ``P = R^2 + I^2`` and ``eps = 1e-7``:

    ========== ===============================================
    mode       value
    ========== ===============================================
    real       ``R``
    imag       ``I``
    angle      ``atan2(I, R)``
    stft       ``R`` and ``I`` stacked on the bin axis (2F bins)
    psd        ``P``, doubled at bins ``1 .. F-2``
    magnitude  ``M = sqrt(max(P, eps))``
    log        ``log(max(M, eps))``
    ========== ===============================================

    Shapes: ``(N, T, C)`` → ``(N, T', C*F)``, or ``(N, T', F, C)`` with ``expand_dims``;
    ``(N, C, T)`` → ``(N, C*F, T')``, or ``(N, C, T', F)`` with ``expand_dims`` (channels first).
    The bins of a channel are contiguous (channel-major).
    """

    Config = STFTSpectrogramConfig
    real_kernel: torch.Tensor  # a registered buffer
    imag_kernel: torch.Tensor  # a registered buffer

    def __init__(self, config: STFTSpectrogramConfig) -> None:
        super().__init__()
        self.config = config
        shape = (config.frame_length, 1, config.num_bins)
        if config.mode != "imag":
            self.register_buffer("real_kernel", torch.zeros(shape))
        if config.mode != "real":
            self.register_buffer("imag_kernel", torch.zeros(shape))

    def _conv(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """``(N*C, 1, T)`` → ``(N*C, F, T')``."""
        cfg = self.config
        weight = kernel.to(x.dtype).permute(2, 1, 0)  # (F, 1, L)
        if cfg.padding == "same":
            length = x.shape[-1]
            total = max((math.ceil(length / cfg.frame_step) - 1) * cfg.frame_step + cfg.frame_length - length, 0)
            x = F.pad(x, (total // 2, total - total // 2))
        return F.conv1d(x, weight, stride=cfg.frame_step)

    def _spectrum(self, flat: torch.Tensor) -> torch.Tensor:
        """The mode's value per frequency bin and frame, ``(N·C, 1, T)`` → ``(N·C, F, T')``."""
        mode = self.config.mode
        if mode in ("real", "imag"):
            return self._conv(flat, self.real_kernel if mode == "real" else self.imag_kernel)
        real, imag = self._conv(flat, self.real_kernel), self._conv(flat, self.imag_kernel)
        if mode == "angle":
            return torch.atan2(imag, real)
        if mode == "stft":
            return torch.cat([real, imag], dim=1)
        power = real.square() + imag.square()
        if mode == "psd":
            return power + F.pad(power[:, 1:-1], (0, 0, 1, 1))
        magnitude = torch.sqrt(torch.clamp(power, min=KERAS_EPSILON))
        return torch.log(torch.clamp(magnitude, min=KERAS_EPSILON)) if mode == "log" else magnitude

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_float(self, x, (3,), "a batch of signals (N, T, C) or (N, C, T)")
        if cfg.data_format == "channels_last":
            x = x.transpose(1, 2)
        batch, channels, length = x.shape
        if length < cfg.frame_length and cfg.padding == "valid":
            raise InputError(
                f"{self.describe()} needs at least frame_length={cfg.frame_length} samples with valid padding. "
                f"Received {length}."
            )
        out = self._spectrum(x.reshape(batch * channels, 1, length))  # (N·C, F, T')
        bins, steps = out.shape[1], out.shape[2]
        out = out.reshape(batch, channels, bins, steps)
        if cfg.data_format == "channels_last":
            if cfg.expand_dims:
                return out.permute(0, 3, 2, 1)  # (N, T', F, C)
            return out.reshape(batch, channels * bins, steps).transpose(1, 2)  # (N, T', C*F)
        if cfg.expand_dims:
            return out.transpose(2, 3)  # (N, C, T', F)
        return out.reshape(batch, channels * bins, steps)  # (N, C*F, T')

    def extra_repr(self) -> str:
        cfg = self.config
        return f"mode={cfg.mode!r}, frame_length={cfg.frame_length}, frame_step={cfg.frame_step}, bins={cfg.num_bins}"


# ---------------------------------------------------------------------------- MelSpectrogram


def raised_cosine_window(length: int, a: float, b: float) -> np.ndarray:
    """TensorFlow's periodic raised-cosine window in float32: ``w[n] = a - b*cos(2*pi*n / D)`` with
    ``D = length`` for an even length and ``D = length - 1`` for an odd one (``w = [1]`` for length 1).
    Hann is ``a = b = 0.5``, Hamming ``a = 0.54, b = 0.46``."""
    if length == 1:
        return np.ones(1, np.float32)
    denominator = np.float32(length if length % 2 == 0 else length - 1)
    count = np.arange(length, dtype=np.float32)
    arg = np.float32(2.0 * np.pi) * count / denominator
    return (np.float32(a) - np.float32(b) * np.cos(arg)).astype(np.float32)


def _linspace(start: Any, stop: Any, num: int) -> np.ndarray:
    """TensorFlow's float32 ``linspace``: ``start``, ``start + i * ((stop - start) / (num - 1))`` for
    ``0 < i < num - 1``, and ``stop`` exactly."""
    if num == 1:
        return np.array([start], np.float32)
    delta = (np.float32(stop) - np.float32(start)) / np.float32(num - 1)
    middle = np.float32(start) + np.arange(1, num - 1, dtype=np.float32) * delta
    return np.concatenate([[start], middle, [stop]]).astype(np.float32)


def mel_weight_matrix(
    num_mel_bins: int, num_bins: int, sampling_rate: float, lower_hz: float, upper_hz: float
) -> np.ndarray:
    """The ``(num_bins, num_mel_bins)`` HTK triangle matrix of Keras' ``linear_to_mel_weight_matrix``
    (float32, as Keras builds it).

    ``mel(f) = 1127 * ln(1 + f / 700)``. Bin ``k >= 1`` sits at ``m_k = mel(k * (sr/2) / (num_bins - 1))``;
    the band edges ``e_0 .. e_{M+1}`` are evenly spaced from ``mel(lower_hz)`` to ``mel(upper_hz)``; band ``j``
    weighs bin ``k`` by ``max(0, min((m_k - e_j) / (e_{j+1} - e_j), (e_{j+2} - m_k) / (e_{j+2} - e_{j+1})))``.
    Row 0 (the DC bin) is zero. The logarithm is numpy's float32 one; TensorFlow's is not
    correctly rounded, so a weight may differ from Keras' by a few float32 ulps (up to 2.4e-6
    measured), about 1e-5 relative in a narrow band.
    """

    def mel(hz: Any) -> Any:
        return np.float32(1127.0) * np.log(np.float32(1.0) + hz / np.float32(700.0))

    f32 = np.float32
    nyquist = f32(sampling_rate) / f32(2.0)
    linear = _linspace(f32(0.0), nyquist, num_bins)[1:]
    bins_mel = mel(linear).astype(np.float32)[:, None]
    edges = _linspace(mel(f32(lower_hz)), mel(f32(upper_hz)), num_mel_bins + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    lower_slopes = (bins_mel - lower) / (center - lower)
    upper_slopes = (upper - bins_mel) / (upper - center)
    weights = np.maximum(f32(0.0), np.minimum(lower_slopes, upper_slopes)).astype(np.float32)
    return np.concatenate([np.zeros((1, num_mel_bins), np.float32), weights], axis=0)


@dataclass(frozen=True)
class MelSpectrogramConfig:
    fft_length: int  # n: FFT size and framed length (the window is zero-padded to it, centred)
    sequence_stride: int  # s: samples between frame starts
    sequence_length: int  # w: window length, <= n
    window: str | tuple[float, ...] | None = "hann"  # "hann", "hamming", w values, or None (n ones)
    sampling_rate: float = 16000.0
    num_mel_bins: int = 128
    min_freq: float = 20.0
    max_freq: float = 8000.0
    power_to_db: bool = True
    top_db: float = 80.0
    mag_exp: float = 2.0
    min_power: float = 1e-10
    ref_power: float = 1.0


@register_module("MelSpectrogram")
class MelSpectrogram(ConfigMixin, nn.Module):
    """Keras 3 ``MelSpectrogram`` (TensorFlow's STFT).

    The signal is reflect-padded by ``n // 2`` samples on both ends, cut into frames of ``n`` samples
    every ``s`` samples (``1 + floor((T + 2*(n//2) - n) / s)`` frames), multiplied by the window
    of ``w`` samples zero-padded to ``n`` (``floor((n - w)/2)`` zeros on the left; without a window,
    by ``n`` ones, whatever ``w``), and transformed:
    ``S[t, k] = |rfft(frame_t * window)[k]| ** mag_exp`` and ``M = S @ W`` with ``W`` from
    :func:`mel_weight_matrix`. With ``power_to_db``:
    ``D = 10*log10(max(M, min_power)) - 10*log10(max(|ref_power|, min_power))`` and
    ``y = max(D, max(D) - top_db)``, where ``max(D)`` runs over the whole batch, as in Keras (a
    sample's output depends on the others in its batch). The FFT runs in float64; the result is
    cast back to the input's dtype.

    Shapes: ``(N, T)`` → ``(N, num_mel_bins, frames)`` (any leading axes are kept).
    """

    Config = MelSpectrogramConfig
    window_values: torch.Tensor  # a buffer, rebuilt from the config
    mel_matrix: torch.Tensor  # a buffer, rebuilt from the config

    def __init__(self, config: MelSpectrogramConfig) -> None:
        super().__init__()
        self.config = config
        n, w = config.fft_length, config.sequence_length
        if config.window is None:
            w, window = n, np.ones(n, np.float64)  # TensorFlow then frames n samples unweighted
        elif config.window == "hann":
            window = raised_cosine_window(w, 0.5, 0.5).astype(np.float64)
        elif config.window == "hamming":
            window = raised_cosine_window(w, 0.54, 0.46).astype(np.float64)
        else:
            window = np.asarray(config.window, np.float32).astype(np.float64)
        left = (n - w) // 2
        padded = np.zeros(n, np.float64)
        padded[left : left + w] = window
        matrix = mel_weight_matrix(
            config.num_mel_bins, n // 2 + 1, config.sampling_rate, config.min_freq, config.max_freq
        ).astype(np.float64)
        self.register_buffer("window_values", torch.from_numpy(padded), persistent=False)
        self.register_buffer("mel_matrix", torch.from_numpy(matrix), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_float(self, x, (1, 2, 3, 4), "a batch of signals (N, T)")
        dtype = x.dtype
        half = cfg.fft_length // 2
        if x.shape[-1] <= half:
            raise InputError(
                f"{self.describe()} reflect-pads the signal by fft_length // 2 = {half} samples, which needs more "
                f"than {half} samples. Received {x.shape[-1]}."
            )
        signal = x.to(torch.float64)
        lead = signal.shape[:-1]
        signal = F.pad(signal.reshape(-1, 1, signal.shape[-1]), (half, half), mode="reflect").reshape(*lead, -1)
        frames = signal.unfold(-1, cfg.fft_length, cfg.sequence_stride)  # (..., frames, n)
        spectrum = torch.fft.rfft(frames * self.window_values.to(torch.float64), n=cfg.fft_length)
        magnitude = torch.sqrt(spectrum.real.square() + spectrum.imag.square())
        power = torch.pow(magnitude, cfg.mag_exp)
        mel = power @ self.mel_matrix.to(torch.float64)  # (..., frames, mel)
        if cfg.power_to_db:
            db = 10.0 * torch.log10(torch.clamp(mel, min=cfg.min_power))
            db = db - 10.0 * math.log10(max(abs(cfg.ref_power), cfg.min_power))
            mel = torch.maximum(db, db.max() - cfg.top_db) if db.numel() else db
        return mel.transpose(-1, -2).to(dtype)  # (..., mel, frames)

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"fft_length={cfg.fft_length}, stride={cfg.sequence_stride}, mel_bins={cfg.num_mel_bins}, "
            f"power_to_db={cfg.power_to_db}"
        )
