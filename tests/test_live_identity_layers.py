"""Layers that are the identity at inference (``Identity`` and the random augmentation layers) and
``UnitNormalization``, live against Keras 3 and tf_keras, saved as ``.keras`` and ``.h5``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch_lstm_probe as tlp
from tests.helpers import assert_model_parity, import_keras, keras_reference, save, seed

# (class, options) per library; each is built on an image batch (N, 8, 8, 3) in [0, 1].
AUGMENTATIONS = {
    "keras": [
        ("RandomFlip", {}),
        ("RandomRotation", {"factor": 0.2}),
        ("RandomTranslation", {"height_factor": 0.1, "width_factor": 0.1}),
        ("RandomZoom", {"height_factor": 0.2}),
        ("RandomContrast", {"factor": 0.3}),
        ("RandomGrayscale", {}),
        ("RandomErasing", {}),
        ("RandomGaussianBlur", {}),
        ("RandomInvert", {}),
    ],
    # Keras 3.15 cannot write these two to .h5 (a deepcopy of their config fails): .keras only.
    "keras_zip_only": [("RandomBrightness", {"factor": 0.2}), ("RandomSharpness", {"factor": 0.2})],
    "tf_keras": [
        ("RandomFlip", {}),
        ("RandomRotation", {"factor": 0.2}),
        ("RandomTranslation", {"height_factor": 0.1, "width_factor": 0.1}),
        ("RandomZoom", {"height_factor": 0.2}),
        ("RandomContrast", {"factor": 0.3}),
        ("RandomBrightness", {"factor": 0.2}),
    ],
}


def _model(k, library: str):
    images = k.Input((8, 8, 3), name="images")
    x = images
    for name, options in AUGMENTATIONS[library]:
        x = getattr(k.layers, name)(name=name.lower(), **options)(x)
    x = k.layers.Reshape((8, 24), name="rows")(x)  # each image row a step
    if hasattr(k.layers, "Identity"):
        x = k.layers.Identity(name="identity")(x)
    x = k.layers.UnitNormalization(name="unit")(x)
    steps = k.layers.LSTM(4, return_sequences=True, name="lstm")(x)
    return k.Model(images, k.layers.UnitNormalization(axis=[1, 2], name="unit_all")(steps), name="identity_layers")


@pytest.mark.parametrize(
    "library, formats", [("keras", ("keras", "h5")), ("tf_keras", ("keras", "h5")), ("keras_zip_only", ("keras",))]
)
def test_identity_and_unit_normalization_layers_match_keras(library: str, formats: tuple[str, ...], tmp_path: Path):
    k = import_keras("keras" if library == "keras_zip_only" else library)
    seed(k)
    model = _model(k, library)
    images = np.random.default_rng(0).uniform(0, 1, size=(3, 8, 8, 3)).astype("float32")
    images[0, 2] = 0.0  # a zero row: the unit norm's epsilon rule
    reference = keras_reference(k, model, [images])
    for fmt in formats:
        assert_model_parity(k, model, tlp.load_keras(save(model, tmp_path, fmt)), [images], reference=reference)
