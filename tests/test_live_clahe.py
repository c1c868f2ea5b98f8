"""Keras 3 ``ContrastLimitedAdaptiveHistogramEqualization`` (CLAHE), which transforms at inference.

One two-input model (0..255 images and 0..1 images, sizes not divisible by most grids) is run by
Keras once and compared with its ``.keras`` and ``.h5`` loads and a ``tlp.save``/``tlp.load``
round trip, every layer at ``ATOL["cpu_float32"]`` (the port reproduces eager Keras bit for bit).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import assert_model_parity, keras_reference, save
from tests.test_live_conv2d3d import _convert
from torch_lstm_probe.errors import InputError, UnsupportedOptionError
from torch_lstm_probe.layers.image import (
    ContrastLimitedAdaptiveHistogramEqualization,
    ContrastLimitedAdaptiveHistogramEqualizationConfig,
)

pytestmark = pytest.mark.keras

BYTE_IMAGE = (19, 23, 3)  # (H, W, C), values 0..255
UNIT_IMAGE = (10, 13, 2)  # (H, W, C), values 0..1

BYTE_CASES = {  # name: options; grids that leave padded tiles, dyadic and other clip limits
    "default": {},
    "grid2x3": {"clip_limit": 2.0, "tile_grid_size": (2, 3)},
    "grid3x2_clip3_3": {"clip_limit": 3.3, "tile_grid_size": (3, 2)},
    "no_clip": {"clip_limit": 0.0, "tile_grid_size": (4, 4)},
    "one_tile": {"clip_limit": 40.0, "tile_grid_size": (1, 1)},
    "grid4x6_clip1_3": {"clip_limit": 1.3, "tile_grid_size": (4, 6)},
    "first": {"clip_limit": 2.5, "tile_grid_size": (2, 5), "data_format": "channels_first"},
}
UNIT_CASES = {
    "unit": {"value_range": (0, 1), "clip_limit": 1.7, "tile_grid_size": (3, 3)},
    "unit_grid5x7": {"value_range": (0, 1), "tile_grid_size": (5, 7)},
    "shifted_range": {"value_range": (-1, 2), "clip_limit": 6.0, "tile_grid_size": (2, 2)},
}


def _model(keras):
    clahe = keras.layers.ContrastLimitedAdaptiveHistogramEqualization
    byte_in, unit_in = keras.Input(BYTE_IMAGE, name="bytes_in"), keras.Input(UNIT_IMAGE, name="unit_in")
    outputs = [clahe(**opts, name=name)(byte_in) for name, opts in BYTE_CASES.items()]
    outputs += [clahe(**opts, name=name)(unit_in) for name, opts in UNIT_CASES.items()]
    return keras.Model([byte_in, unit_in], outputs, name="clahe")


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    byte = rng.integers(0, 256, (2, *BYTE_IMAGE)).astype(np.float32)
    byte[0, :6] = rng.uniform(-20.0, 280.0, (6, *BYTE_IMAGE[1:]))  # fractional and out-of-range values
    byte[1, :, :, 1] = 77.0  # a constant channel: every tile denominator is 0
    byte[1, 10:, 12:, 2] = rng.integers(100, 104, (9, 11))  # a near-constant block: clipping acts
    unit = rng.uniform(0.0, 1.0, (2, *UNIT_IMAGE)).astype(np.float32)
    unit[1, :4] = unit[1, :4] * 0.1 + 0.45  # low contrast rows
    return [byte, unit]


def test_clahe_parity(keras3, tmp_path):
    model = _model(keras3)
    inputs = _inputs()
    reference = keras_reference(keras3, model, inputs)
    for fmt in ("keras", "h5"):
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        assert_model_parity(keras3, model, converted, inputs, reference=reference)
    tlp.save(converted, tmp_path / "m.safetensors")
    assert_model_parity(keras3, model, tlp.load(tmp_path / "m.safetensors"), inputs, reference=reference)


@pytest.mark.parametrize(
    "config, match",
    [
        pytest.param({"value_range": [1, 1]}, r"'value_range' is \[1, 1\]", id="empty_range"),
        pytest.param({"value_range": [255, 0]}, r"'value_range' is \[255, 0\].*low < high", id="reversed_range"),
        pytest.param({"clip_limit": "high"}, r"'clip_limit' is 'high'", id="clip_limit"),
        pytest.param({"tile_grid_size": [0, 4]}, r"'tile_grid_size' is \[0, 4\]", id="grid_zero"),
        pytest.param({"tile_grid_size": [2.5, 4]}, r"'tile_grid_size' is \[2.5, 4\]", id="grid_float"),
        pytest.param({"data_format": "channels_middle"}, r"'data_format' is 'channels_middle'", id="data_format"),
    ],
)
def test_clahe_refused(config, match):
    with pytest.raises(
        UnsupportedOptionError, match=r"'layer' \(ContrastLimitedAdaptiveHistogramEqualization\).*" + match
    ):
        _convert("ContrastLimitedAdaptiveHistogramEqualization", config)


def test_clahe_pad_larger_than_image():
    """Keras pads to whole tiles by mirroring, which TensorFlow refuses beyond the image size."""
    module = ContrastLimitedAdaptiveHistogramEqualization(ContrastLimitedAdaptiveHistogramEqualizationConfig())
    with pytest.raises(InputError, match="more than its own size"):
        module(torch.zeros(1, 3, 3, 1))
    assert module(torch.zeros(1, 4, 4, 1)).shape == (1, 4, 4, 1)  # 8x8 grid: pads 4 rows and columns
