"""Keras image layers that resize or crop at inference: ``Resizing``, ``CenterCrop`` and ``RandomCrop``.

Both take a batch of images ``(N, H, W, C)`` (``(N, C, H, W)`` with ``channels_first``) and do
not support masking: a mask stops here. ``AutoContrast`` (Keras 3) rescales values per image and
channel at inference, keeping the shape; ``ContrastLimitedAdaptiveHistogramEqualization`` (Keras 3)
equalizes tile histograms at inference, keeping the shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin

__all__ = [
    "AutoContrast",
    "AutoContrastConfig",
    "CenterCrop",
    "CenterCropConfig",
    "ContrastLimitedAdaptiveHistogramEqualization",
    "ContrastLimitedAdaptiveHistogramEqualizationConfig",
    "RandomCrop",
    "RandomCropConfig",
    "Resizing",
    "ResizingConfig",
    "RESIZE_METHODS",
]

RESIZE_METHODS = ("bilinear", "nearest")


def _half_pixel_positions(out_size: int, in_size: int, device: torch.device) -> torch.Tensor:
    """``(i + 0.5) * (in / out)`` for each output index ``i``, in float32 as TF computes it."""
    scale = torch.tensor(in_size, dtype=torch.float32, device=device) / out_size  # ()
    return (torch.arange(out_size, dtype=torch.float32, device=device) + 0.5) * scale  # (out,)


def _nearest_indices(out_size: int, in_size: int, device: torch.device) -> torch.Tensor:
    """TF nearest neighbour with half-pixel centers: ``min(floor((i + 0.5) * in / out), in - 1)``."""
    return _half_pixel_positions(out_size, in_size, device).floor().long().clamp(0, in_size - 1)  # (out,)


def _bilinear_taps(out_size: int, in_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """TF bilinear with half-pixel centers: ``p = (i + 0.5) * in / out - 0.5``; the taps are
    ``max(floor(p), 0)`` and ``min(ceil(p), in - 1)``, the weight of the upper one ``p - floor(p)``."""
    p = _half_pixel_positions(out_size, in_size, device) - 0.5  # (out,)
    low = p.floor()
    return low.long().clamp(min=0), p.ceil().long().clamp(max=in_size - 1), p - low


def resize_nhwc(x: torch.Tensor, height: int, width: int, method: str) -> torch.Tensor:
    """``tf.image.resize(x, (height, width), method)`` without antialiasing: ``(N, H, W, C)`` →
    ``(N, height, width, C)``.

    Bilinear, as TF's kernel: ``top = tl + (tr - tl) * wx``, ``bottom = bl + (br - bl) * wx``,
    ``y = top + (bottom - top) * wy``.
    """
    in_h, in_w = x.shape[1], x.shape[2]
    if method == "nearest":
        rows, cols = _nearest_indices(height, in_h, x.device), _nearest_indices(width, in_w, x.device)
        return x.index_select(1, rows).index_select(2, cols)  # (N, height, width, C)
    top_i, bottom_i, wy = _bilinear_taps(height, in_h, x.device)
    left_i, right_i, wx = _bilinear_taps(width, in_w, x.device)
    wy, wx = wy.to(x.dtype).reshape(1, -1, 1, 1), wx.to(x.dtype).reshape(1, 1, -1, 1)
    top, bottom = x.index_select(1, top_i), x.index_select(1, bottom_i)  # (N, height, W, C)
    tl, tr = top.index_select(2, left_i), top.index_select(2, right_i)  # (N, height, width, C)
    bl, br = bottom.index_select(2, left_i), bottom.index_select(2, right_i)  # (N, height, width, C)
    upper = tl + (tr - tl) * wx
    lower = bl + (br - bl) * wx
    return upper + (lower - upper) * wy  # (N, height, width, C)


def crop_to_aspect_nhwc(x: torch.Tensor, height: int, width: int, at_least_one: bool) -> torch.Tensor:
    """The largest centered window of ``x`` ``(N, H, W, C)`` with the aspect ratio ``height / width``.

    ``ch = min(H, int(W * height / width))``, ``cw = min(W, int(H * width / height))`` (each at
    least 1 with ``at_least_one``, as Keras 3), starting at ``int((H - ch) / 2)``, ``int((W - cw) / 2)``.
    """
    in_h, in_w = x.shape[1], x.shape[2]
    crop_h, crop_w = min(in_h, in_w * height // width), min(in_w, in_h * width // height)
    if at_least_one:
        crop_h, crop_w = max(crop_h, 1), max(crop_w, 1)
    top, left = (in_h - crop_h) // 2, (in_w - crop_w) // 2
    return x[:, top : top + crop_h, left : left + crop_w, :]  # (N, ch, cw, C)


def _as_nhwc(layer: ConfigMixin, x: torch.Tensor, channels_first: bool) -> torch.Tensor:
    if x.dim() != 4:
        raise InputError(
            f"{layer.describe()} expects a batch of images (N, H, W, C){' in channels_first order' if channels_first else ''}. "
            f"Received a tensor of shape {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise InputError(f"{layer.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")
    return x.permute(0, 2, 3, 1) if channels_first else x


def _check_crop(layer: ConfigMixin, x: torch.Tensor) -> None:
    if 0 in x.shape[1:3]:
        raise InputError(
            f"{layer.describe()} crops an image of shape {tuple(x.shape)} to nothing for its aspect ratio; "
            "tf_keras fails on it too."
        )


@dataclass(frozen=True)
class ResizingConfig:
    height: int  # Keras `height` of the output
    width: int  # Keras `width` of the output
    interpolation: str = "bilinear"  # "bilinear" or "nearest" (half-pixel centers, no antialiasing)
    crop_to_aspect_ratio: bool = False  # Keras `crop_to_aspect_ratio`: centered crop before resizing
    channels_first: bool = False  # Keras 3 `data_format="channels_first"`
    crop_at_least_one: bool = True  # Keras 3 keeps at least one row and column when cropping; tf_keras not


@register_module("Resizing")
class Resizing(ConfigMixin, nn.Module):
    """Keras ``Resizing``: ``tf.image.resize`` to ``(height, width)`` with half-pixel centers and
    no antialiasing, after a centered crop to the target aspect ratio with ``crop_to_aspect_ratio``.

    Nearest: ``src = min(floor((i + 0.5) * in / out), in - 1)``. Bilinear: see :func:`resize_nhwc`.
    Shapes: ``(N, H, W, C)`` → ``(N, height, width, C)``.
    """

    Config = ResizingConfig

    def __init__(self, config: ResizingConfig) -> None:
        super().__init__()
        if config.interpolation not in RESIZE_METHODS:
            raise ValueError(
                f"Resizing interpolation must be one of {RESIZE_METHODS}. Received {config.interpolation!r}."
            )
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        images = _as_nhwc(self, x, cfg.channels_first)  # (N, H, W, C)
        if cfg.crop_to_aspect_ratio:
            images = crop_to_aspect_nhwc(images, cfg.height, cfg.width, cfg.crop_at_least_one)
            _check_crop(self, images)
        y = resize_nhwc(images, cfg.height, cfg.width, cfg.interpolation)  # (N, height, width, C)
        return y.permute(0, 3, 1, 2) if cfg.channels_first else y

    def extra_repr(self) -> str:
        cfg = self.config
        return f"height={cfg.height}, width={cfg.width}, interpolation={cfg.interpolation!r}, crop_to_aspect_ratio={cfg.crop_to_aspect_ratio}"


@dataclass(frozen=True)
class CenterCropConfig:
    height: int  # Keras `height` of the output
    width: int  # Keras `width` of the output
    channels_first: bool = False  # Keras 3 `data_format="channels_first"`
    crop_at_least_one: bool = True  # Keras 3 keeps at least one row and column in the fallback crop


@register_module("CenterCrop")
class CenterCrop(ConfigMixin, nn.Module):
    """Keras ``CenterCrop``: the centered ``(height, width)`` window, starting at row
    ``(H - height) // 2`` and column ``(W - width) // 2``.

    An image smaller than the target on either side is instead cropped to the target aspect ratio
    and resized bilinearly (Keras' ``smart_resize``). Shapes: ``(N, H, W, C)`` → ``(N, height, width, C)``.
    """

    Config = CenterCropConfig

    def __init__(self, config: CenterCropConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        images = _as_nhwc(self, x, cfg.channels_first)  # (N, H, W, C)
        h_diff, w_diff = images.shape[1] - cfg.height, images.shape[2] - cfg.width
        if h_diff >= 0 and w_diff >= 0:
            top, left = h_diff // 2, w_diff // 2
            y = images[:, top : top + cfg.height, left : left + cfg.width, :]  # (N, height, width, C)
        else:
            images = crop_to_aspect_nhwc(images, cfg.height, cfg.width, cfg.crop_at_least_one)
            _check_crop(self, images)
            y = resize_nhwc(images, cfg.height, cfg.width, "bilinear")  # (N, height, width, C)
        return y.permute(0, 3, 1, 2) if cfg.channels_first else y

    def extra_repr(self) -> str:
        return f"height={self.config.height}, width={self.config.width}"


@dataclass(frozen=True)
class RandomCropConfig:
    height: int  # Keras `height` of the crop
    width: int  # Keras `width` of the crop
    channels_first: bool = False  # Keras 3 `data_format="channels_first"`
    smart_resize: bool = True  # tf_keras crops and resizes at inference; Keras 3 returns the images unchanged


@register_module("RandomCrop")
class RandomCrop(ConfigMixin, nn.Module):
    """Keras ``RandomCrop`` at inference (``training=False``).

    tf_keras (``smart_resize``): the largest centered window with the aspect ratio
    ``height / width``, ``ch = min(H, int(W * height / width))``, ``cw = min(W, int(H * width / height))``,
    starting at ``int((H - ch) / 2)``, ``int((W - cw) / 2)``, resized bilinearly (half-pixel centers,
    no antialiasing) to ``(height, width)``: ``(N, H, W, C)`` → ``(N, height, width, C)``, also when
    the image is larger than the target. Keras 3 (``smart_resize=False``): its inference branch
    returns the images unchanged, ``(N, H, W, C)`` → ``(N, H, W, C)``, whatever shape its
    config declares.
    """

    Config = RandomCropConfig

    def __init__(self, config: RandomCropConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not cfg.smart_resize:
            return x
        if x.dim() == 4 and not x.is_floating_point() and x.dtype != torch.bool and not x.is_complex():
            x = x.to(torch.float32)  # tf_keras casts the images to its compute dtype
        images = _as_nhwc(self, x, cfg.channels_first)  # (N, H, W, C)
        images = crop_to_aspect_nhwc(images, cfg.height, cfg.width, False)  # (N, ch, cw, C)
        _check_crop(self, images)
        y = resize_nhwc(images, cfg.height, cfg.width, "bilinear")  # (N, height, width, C)
        return y.permute(0, 3, 1, 2) if cfg.channels_first else y

    def extra_repr(self) -> str:
        cfg = self.config
        return f"height={cfg.height}, width={cfg.width}, smart_resize={cfg.smart_resize}"


@dataclass(frozen=True)
class AutoContrastConfig:
    value_range: tuple[float, float] = (0.0, 255.0)  # Keras `value_range` (low, high), sorted


def _rescale(x: torch.Tensor, source: tuple[float, float], target: tuple[float, float]) -> torch.Tensor:
    """``(x - s0) / (s1 - s0) * (t1 - t0) + t0`` with every bound a tensor of ``x``'s dtype (as Keras
    computes it); the identity when the ranges are equal."""
    if source[0] == target[0] and source[1] == target[1]:
        return x
    s0, s1, t0, t1 = (x.new_tensor(v) for v in (*source, *target))
    return (x - s0) / (s1 - s0) * (t1 - t0) + t0


@register_module("AutoContrast")
class AutoContrast(ConfigMixin, nn.Module):
    """Keras 3 ``AutoContrast``: stretches each image's values to the full value range, at inference too.

    With ``u = (x - r0) / (r1 - r0) * 255`` and, per image ``n`` and last-axis index ``c``,
    ``lo = min_{a, b} u[n, a, b, c]``, ``hi = max_{a, b} u[n, a, b, c]`` (Keras reduces axes 1 and 2
    of the 4-D input whatever its ``data_format``)::

        v = clip(u * s + (-lo * s), 0, 255),  s = 255 / (hi - lo)
        y = v / 255 * (r1 - r0) + r0, or x where y is NaN (a constant slice: hi = lo)

    Shapes: ``(N, A, B, C)`` → ``(N, A, B, C)``.
    """

    Config = AutoContrastConfig

    def __init__(self, config: AutoContrastConfig) -> None:
        super().__init__()
        low, high = (float(v) for v in config.value_range)
        if not low < high:
            raise ValueError(
                f"AutoContrast value_range must be (low, high) with low < high. Received {config.value_range}."
            )
        self.config = config
        self.value_range = (low, high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _as_nhwc(self, x, False)  # checks a float 4-D batch
        u = _rescale(x, self.value_range, (0.0, 255.0))  # (N, A, B, C)
        low = u.amin(dim=(1, 2), keepdim=True)  # (N, 1, 1, C)
        high = u.amax(dim=(1, 2), keepdim=True)  # (N, 1, 1, C)
        scale = u.new_tensor(255.0) / (high - low)  # a true division (`255.0 / t` multiplies by 1 / t)
        v = (u * scale + (-low * scale)).clamp(0.0, 255.0)  # (N, A, B, C)
        y = _rescale(v, (0.0, 255.0), self.value_range)
        return torch.where(torch.isnan(y), x, y)  # (N, A, B, C)

    def extra_repr(self) -> str:
        return f"value_range={self.value_range}"


@dataclass(frozen=True)
class ContrastLimitedAdaptiveHistogramEqualizationConfig:
    value_range: tuple[float, float] = (0.0, 255.0)  # Keras `value_range` (low, high), low < high
    clip_limit: float = 4.0  # Keras `clip_limit`; 0 or less: no clipping
    tile_grid_size: tuple[int, int] = (8, 8)  # Keras `tile_grid_size` (rows, columns) of tiles
    channels_first: bool = False  # Keras 3 `data_format="channels_first"`


def _symmetric_pad(x: torch.Tensor, dim: int, pad: int) -> torch.Tensor:
    """Appends ``pad`` entries to ``dim`` mirroring the edge (edge included): ``x[n - 1], x[n - 2], ...``."""
    if pad == 0:
        return x
    n = x.shape[dim]
    return torch.cat([x, x.narrow(dim, n - pad, pad).flip(dim)], dim=dim)


def _packet_sum_256(x: torch.Tensor) -> torch.Tensor:
    """The float32 sum over the last axis (256 long) in TensorFlow's CPU order: four 8-lane
    accumulators ``a_m = sum_j x[32 j + 8 m + lane]`` (running sums), ``((a_0 + a_1) + a_2) + a_3``,
    then the 8 lanes summed by halving (``l + l'`` for lanes 4 apart, 2 apart, 1 apart)."""
    packets = x.reshape(*x.shape[:-1], 8, 4, 8)  # (..., j, m, lane)
    acc = [packets[..., 0, m, :] for m in range(4)]
    for j in range(1, 8):
        acc = [acc[m] + packets[..., j, m, :] for m in range(4)]
    lanes = ((acc[0] + acc[1]) + acc[2]) + acc[3]  # (..., 8)
    while lanes.shape[-1] > 1:
        half = lanes.shape[-1] // 2
        lanes = lanes[..., :half] + lanes[..., half:]
    return lanes  # (..., 1)


@register_module("ContrastLimitedAdaptiveHistogramEqualization")
class ContrastLimitedAdaptiveHistogramEqualization(ConfigMixin, nn.Module):
    """Keras 3 ``ContrastLimitedAdaptiveHistogramEqualization`` (CLAHE), which acts at inference too.

    All in float32. ``u = (x - r0) / (r1 - r0) * 255``; with a ``(gh, gw)`` grid on an ``H x W``
    image, tiles are ``th = ceil(H / gh)`` by ``tw = ceil(W / gw)``, and the image is padded at the
    bottom and right to ``(gh th, gw tw)`` by mirroring (edge included). Per image, channel and tile
    ``(i, j)``, with bins ``b(p) = clip(trunc(u_p), 0, 255)`` and ``A = th tw``::

        h[k] = #{p in tile : b(p) = k}                              k = 0..255
        clip_limit > 0:  L = clip_limit * A / 256,  h[k] <- min(h[k], L) + E / 256,
                         E = sum_m (h[m] - min(h[m], L))   (summed as TensorFlow's CPU kernel)
        F[k] = h[0] + ... + h[k]   (running float32 sum)
        T_ij[k] = clip((F[k] - F[0]) * 255 / D, 0, 255),  D = A - F[0], or 1 where that is 0

    The tile maps are extended by repeating the border tiles (indices ``0..gh + 1``, ``0..gw + 1``).
    For the padded pixel ``(a, b)``, ``sy = (a - th / 2) / th + 1``, ``y0 = floor(sy)``,
    ``wy = sy - y0``, ``y1 = y0 + 1`` (both clipped to ``0..gh + 1``), likewise ``x0, x1, wx``::

        v = (T_{y0 x0} (1 - wx) + T_{y0 x1} wx) (1 - wy) + (T_{y1 x0} (1 - wx) + T_{y1 x1} wx) wy,
        evaluated at k = b(a, b), cropped to H x W;   y = v / 255 * (r1 - r0) + r0

    Shapes: ``(N, H, W, C)`` → ``(N, H, W, C)`` (``(N, C, H, W)`` with ``channels_first``).
    """

    Config = ContrastLimitedAdaptiveHistogramEqualizationConfig

    def __init__(self, config: ContrastLimitedAdaptiveHistogramEqualizationConfig) -> None:
        super().__init__()
        low, high = (float(v) for v in config.value_range)
        if not low < high:
            raise ValueError(
                f"ContrastLimitedAdaptiveHistogramEqualization value_range must be (low, high) with low < high. "
                f"Received {config.value_range}."
            )
        if len(config.tile_grid_size) != 2 or min(config.tile_grid_size) < 1:
            raise ValueError(
                f"ContrastLimitedAdaptiveHistogramEqualization tile_grid_size must be two positive ints. "
                f"Received {config.tile_grid_size}."
            )
        self.config = config
        self.value_range = (low, high)

    def _tile_maps(self, bins: torch.Tensor, tile_h: int, tile_w: int) -> torch.Tensor:
        """Per-tile lookup tables ``(N, gh + 2, gw + 2, C, 256)`` from bin indices ``(N, gh th, gw tw, C)``."""
        grid_h, grid_w = self.config.tile_grid_size
        n, _, _, c = bins.shape
        area = tile_h * tile_w
        tiles = bins.reshape(n, grid_h, tile_h, grid_w, tile_w, c).permute(0, 1, 3, 5, 2, 4)
        tiles = tiles.reshape(n, grid_h, grid_w, c, area)  # (N, gh, gw, C, A)
        counts = torch.zeros(n, grid_h, grid_w, c, 256, dtype=torch.int64, device=bins.device)
        counts.scatter_add_(-1, tiles, torch.ones_like(tiles))
        hist = counts.to(torch.float32)  # (N, gh, gw, C, 256), exact integers
        if self.config.clip_limit > 0:
            limit = hist.new_tensor(self.config.clip_limit * area / 256.0)
            clipped = torch.minimum(hist, limit)  # hist >= 0
            excess = _packet_sum_256(hist - clipped)  # (N, gh, gw, C, 1)
            hist = clipped + excess / 256.0
        running = torch.zeros_like(hist[..., 0])
        cdf = torch.empty_like(hist)
        for k in range(256):  # a left-to-right float32 running sum
            running = running + hist[..., k]
            cdf[..., k] = running
        cdf_min = cdf.amin(dim=-1, keepdim=True)
        denominator = cdf_min.new_tensor(float(area)) - cdf_min
        denominator = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
        maps = ((cdf - cdf_min) * 255.0 / denominator).clamp(0.0, 255.0)  # (N, gh, gw, C, 256)
        maps = torch.cat([maps[:, :1], maps, maps[:, -1:]], dim=1)
        return torch.cat([maps[:, :, :1], maps, maps[:, :, -1:]], dim=2)  # (N, gh + 2, gw + 2, C, 256)

    @staticmethod
    def _taps(size: int, tile: int, grid: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        pos = (torch.arange(size, dtype=torch.float32, device=device) - tile / 2.0) / float(tile) + 1.0
        low = pos.floor()
        weight = pos - low
        return low.clamp(0, grid + 1).long(), (low + 1.0).clamp(0, grid + 1).long(), weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        images = _as_nhwc(self, x, cfg.channels_first)  # (N, H, W, C)
        dtype = images.dtype
        n, height, width, c = images.shape
        grid_h, grid_w = cfg.tile_grid_size
        tile_h, tile_w = -(-height // grid_h), -(-width // grid_w)
        pad_h, pad_w = tile_h * grid_h - height, tile_w * grid_w - width
        if pad_h > height or pad_w > width:
            raise InputError(
                f"{self.describe()} pads an image of shape {tuple(x.shape)} to whole tiles of a "
                f"{cfg.tile_grid_size} grid by more than its own size; Keras fails on it too."
            )
        u = _rescale(images.to(torch.float32), self.value_range, (0.0, 255.0))
        u = _symmetric_pad(_symmetric_pad(u, 1, pad_h), 2, pad_w)  # (N, Hp, Wp, C)
        bins = u.clamp(-1.0, 256.0).trunc().long().clamp(0, 255)  # (N, Hp, Wp, C)
        maps = self._tile_maps(bins, tile_h, tile_w)  # (N, gh + 2, gw + 2, C, 256)
        y0, y1, wy = self._taps(tile_h * grid_h, tile_h, grid_h, x.device)
        x0, x1, wx = self._taps(tile_w * grid_w, tile_w, grid_w, x.device)
        batch = torch.arange(n, device=x.device).reshape(-1, 1, 1, 1)
        chan = torch.arange(c, device=x.device).reshape(1, 1, 1, -1)

        def tap(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            return maps[batch, rows.reshape(1, -1, 1, 1), cols.reshape(1, 1, -1, 1), chan, bins]

        wy, wx = wy.reshape(1, -1, 1, 1), wx.reshape(1, 1, -1, 1)
        top = tap(y0, x0) * (1.0 - wx) + tap(y0, x1) * wx
        bottom = tap(y1, x0) * (1.0 - wx) + tap(y1, x1) * wx
        v = (top * (1.0 - wy) + bottom * wy)[:, :height, :width, :]  # (N, H, W, C)
        y = _rescale(v, (0.0, 255.0), self.value_range).to(dtype)
        return y.permute(0, 3, 1, 2) if cfg.channels_first else y

    def extra_repr(self) -> str:
        cfg = self.config
        return f"value_range={self.value_range}, clip_limit={cfg.clip_limit}, tile_grid_size={cfg.tile_grid_size}"
