"""Live parity of the Keras 3 audio front ends (STFTSpectrogram, MelSpectrogram) with Keras.

Each model is saved as ``.keras`` and legacy ``.h5``, Keras runs once per model, and every layer's
output of each load is compared with it at ``ATOL["cpu_float32"] + RTOL * |keras|``. A spectrogram
value is a sum of up to ``fft_length`` float32 products whose rounding in TensorFlow's FFT grows
with the frame's energy: power values near 100 differ from the exact ones by about 5e-5, so they
cannot meet an absolute 1e-5. Keras also builds the mel filter bank in float32 with TensorFlow's
``log``, which is not correctly rounded: its filter weights differ from correctly rounded ones by
up to 2.4e-6, a relative change of about 1e-5 in a mel band. ``RTOL = 2e-5`` covers both. A value in decibels carries the
same relative power error as an absolute one, ``10 * log10(1 + r)`` dB, largest in the weak mel
bands (measured up to 5e-5 dB): the dB layers are compared at ``DB_ATOL = 1e-4`` dB, a relative
power error of 2.3e-5. Everything after a spectrogram (Rescaling, LSTM, Dense) meets 1e-5.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from torch_lstm_probe.converters.common import Context
from torch_lstm_probe.converters.registry import lookup
from torch_lstm_probe.converters.spec import KerasVersion, LayerSpec

import torch_lstm_probe as tlp
from tests.helpers import ATOL, import_keras, keras_reference, save, seed, to_numpy
from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.audio import STFTSpectrogram
from torch_lstm_probe.layers.preprocessing import HashedCrossing, HashedCrossingConfig

pytestmark = pytest.mark.keras

RTOL = 2e-5
DB_ATOL = 1e-4
DB_LAYERS = {"db", "db_clip", "db_listed", "mel"}  # MelSpectrogram layers with power_to_db


def _assert_close(got: Any, expected: np.ndarray, what: str, atol: float = ATOL["cpu_float32"]) -> None:
    a, e = to_numpy(got), np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != Keras {e.shape}"
    excess = np.abs(a - e) - (atol + RTOL * np.abs(e))
    assert a.size == 0 or excess.max() <= 0, f"{what}: max abs error {np.abs(a - e).max():.3g} beyond tolerance"


def _check(
    keras3, model, inputs: list[np.ndarray], tmp_path, outputs_db: bool = False, formats=("keras", "h5")
) -> list[Any]:
    """Saves ``model`` in each format, checks every layer of each load against one Keras run."""
    reference = keras_reference(keras3, model, inputs)
    loads = []
    for fmt in formats:
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        acts = tlp.probe(converted, list(inputs) if len(inputs) > 1 else inputs[0])
        for key, expected in reference.layers.items():
            atol = DB_ATOL if key in DB_LAYERS else ATOL["cpu_float32"]
            _assert_close(acts[key], expected, f".{fmt} layer {key}", atol)
        with torch.inference_mode():
            got = converted(*inputs)
        got = got if isinstance(got, list) else [got]
        for k, (g, e) in enumerate(zip(got, reference.outputs)):
            _assert_close(g, e, f".{fmt} output {k}", DB_ATOL if outputs_db else ATOL["cpu_float32"])
        loads.append(converted)
    return loads


def _signal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Two sines and noise per row: energy spread over a few bins, as in speech."""
    t = np.arange(shape[1], dtype=np.float64)[None, :]
    freq = rng.uniform(0.02, 0.4, (shape[0], 1))
    base = np.sin(2 * np.pi * freq * t) + 0.5 * np.sin(2 * np.pi * 2.7 * freq * t)
    base = base.reshape(shape[:2] + (1,) * (len(shape) - 2))
    return (base + 0.3 * rng.normal(size=shape)).astype(np.float32)


# ---------------------------------------------------------------------------- STFTSpectrogram


def test_stft_spectrogram_modes(keras3, tmp_path):
    """Every mode, both paddings, both data formats, expand_dims, default and explicit frame_step /
    fft_length, an explicit window or none, scalings density / spectrum / None, on a two-channel
    signal. (A window given by name needs SciPy in Keras, which the test environment lacks; the
    kernels Keras saves are converted the same way whatever window made them.)"""
    seed(keras3)
    layers = keras3.layers
    rng = np.random.default_rng(0)
    steps = 100
    last = keras3.Input((steps, 2), name="last")
    stft = layers.STFTSpectrogram

    def hann(n: int) -> list[float]:
        return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).tolist()

    outs = [
        stft(mode="log", frame_length=32, window=hann(32), name="log")(last),
        stft(
            mode="magnitude",
            frame_length=24,
            frame_step=7,
            fft_length=32,
            window=hann(24),
            scaling="spectrum",
            padding="same",
            name="magnitude",
        )(last),
        stft(mode="psd", frame_length=16, frame_step=5, window=None, scaling=None, name="psd")(last),
        stft(mode="real", frame_length=16, frame_step=8, window=None, expand_dims=True, name="real")(last),
        stft(mode="imag", frame_length=16, frame_step=3, window=None, padding="same", name="imag")(last),
        stft(mode="angle", frame_length=16, frame_step=6, window=hann(16), name="angle")(last),
        stft(mode="stft", frame_length=20, frame_step=10, window=None, name="stft")(last),
        stft(
            mode="log",
            frame_length=16,
            frame_step=4,
            window=hann(16),
            padding="same",
            expand_dims=True,
            name="log_same",
        )(last),
    ]
    model = keras3.Model(last, outs, name="stft_modes")
    x = _signal(rng, 3, steps, 2)
    converted = _check(keras3, model, [x], tmp_path)[0]
    # channels_first: TensorFlow has no CPU kernel for it, so each layer is checked against its
    # channels_last twin, which Keras arranges the same way up to the axis order.
    first = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))
    with torch.inference_mode():
        for name in ("stft", "log_same", "real"):
            twin = converted.layer(name)
            config = dataclasses.replace(twin.config, data_format="channels_first")
            module = STFTSpectrogram(config)
            module.load_state_dict(twin.state_dict())
            want = twin(torch.from_numpy(x))
            want = want.permute(0, 3, 1, 2) if config.expand_dims else want.transpose(1, 2)
            assert torch.equal(module(first), want), name


# ---------------------------------------------------------------------------- MelSpectrogram


def test_mel_spectrogram_options(keras3, tmp_path):
    """dB and power outputs, windows hann / hamming / none / listed, sequence_length < fft_length, custom
    frequency range, mag_exp, ref_power and top_db (which clips over the whole batch)."""
    layers = keras3.layers
    rng = np.random.default_rng(1)
    inp = keras3.Input((400,), name="audio")
    mel = layers.MelSpectrogram
    outs = [
        mel(fft_length=64, sequence_stride=16, num_mel_bins=20, sampling_rate=8000, name="db")(inp),
        mel(
            fft_length=64,
            sequence_stride=20,
            sequence_length=48,
            window="hamming",
            num_mel_bins=12,
            sampling_rate=16000,
            min_freq=100.0,
            max_freq=6000.0,
            top_db=30.0,
            ref_power=5.0,
            name="db_clip",
        )(inp),
        mel(
            fft_length=32,
            sequence_stride=10,
            sequence_length=31,
            window=None,
            num_mel_bins=8,
            sampling_rate=4000,
            power_to_db=False,
            mag_exp=1.0,
            name="magnitude",
        )(inp),
        mel(fft_length=64, sequence_stride=32, num_mel_bins=16, power_to_db=False, name="power")(inp),
        mel(
            fft_length=32,
            sequence_stride=16,
            sequence_length=20,
            window=np.linspace(0.2, 1.0, 20).tolist(),
            num_mel_bins=6,
            sampling_rate=2000,
            name="db_listed",
        )(inp),
    ]
    model = keras3.Model(inp, outs, name="mel_options")
    _check(keras3, model, [_signal(rng, 3, 400)], tmp_path, outputs_db=True)


def test_mel_spectrogram_lstm(keras3, tmp_path):
    """MelSpectrogram → LSTM → Dense (Keras feeds the LSTM the mel axis as its time axis)."""
    seed(keras3)
    layers = keras3.layers
    model = keras3.Sequential(
        [
            keras3.Input((320,)),
            layers.MelSpectrogram(fft_length=64, sequence_stride=32, num_mel_bins=10, sampling_rate=8000, name="mel"),
            layers.Rescaling(1 / 80.0, name="scale"),
            layers.LSTM(6, name="lstm"),
            layers.Dense(3, name="dense"),
        ],
        name="mel_lstm",
    )
    converted = _check(keras3, model, [_signal(np.random.default_rng(2), 4, 320)], tmp_path)[0]
    tlp.save(converted, tmp_path / "mel_lstm.safetensors")
    restored = tlp.load(tmp_path / "mel_lstm.safetensors")
    x = _signal(np.random.default_rng(3), 2, 320)
    with torch.inference_mode():
        assert torch.equal(restored(x), converted(x))


def _refusal(class_name: str, config: dict[str, Any], match: str) -> None:
    layer = LayerSpec(name="pre", class_name=class_name, config=config)
    ctx = Context(source="test.keras", keras_version=KerasVersion(3, 10))
    with pytest.raises(UnsupportedOptionError, match=rf"'pre' \({class_name}\).*{match}"):
        lookup(layer, ctx)(layer, ctx)


def test_audio_refusals():
    _refusal("STFTSpectrogram", {"mode": "cqt", "frame_length": 16}, "mode is 'cqt'")
    _refusal("STFTSpectrogram", {"padding": "causal", "frame_length": 16}, "padding is 'causal'")
    _refusal("MelSpectrogram", {"fft_length": 64, "window": "blackman"}, "window is 'blackman'")
    _refusal("MelSpectrogram", {"fft_length": 64, "top_db": None}, "top_db is None")
    _refusal("MelSpectrogram", {"fft_length": 64, "center": False}, "'center'")


# ---------------------------------------------------------------------------- Pipeline


def test_pipeline(keras3, tmp_path):
    """Pipeline([Normalization (adapted: 3 weights), Rescaling, RandomFlip, STFTSpectrogram (2 kernels)])
    → LSTM, and a weightless Pipeline on a second input. Only ``.keras``: Pipeline's config has no
    ``trainable`` key, so the legacy ``.h5`` reader takes it for an op node."""
    seed(keras3)
    layers = keras3.layers
    rng = np.random.default_rng(4)
    norm = layers.Normalization(axis=-1, name="norm")
    norm.adapt(rng.normal(2.0, 3.0, (50, 64, 1)).astype(np.float32))
    pipe = layers.Pipeline(
        [
            norm,
            layers.Rescaling(0.5, offset=0.1),
            layers.RandomFlip(),
            layers.STFTSpectrogram(mode="log", frame_length=16, frame_step=8, window=None),
        ],
        name="front",
    )
    audio = keras3.Input((64, 1), name="audio")
    other = keras3.Input((5,), name="other")
    plain = layers.Pipeline([layers.Rescaling(2.0), layers.Activation("tanh")], name="plain")(other)
    model = keras3.Model([audio, other], [layers.LSTM(4, name="lstm")(pipe(audio)), plain], name="pipeline")
    x = (rng.normal(2.0, 3.0, (3, 64, 1))).astype(np.float32)
    y = rng.normal(size=(3, 5)).astype(np.float32)
    # Keras 3's .h5 lists this Pipeline's inner weights in another order than its layers: .keras only.
    converted = _check(keras3, model, [x, y], tmp_path, formats=("keras",))[0]
    tlp.save(converted, tmp_path / "pipeline.safetensors")
    restored = tlp.load(tmp_path / "pipeline.safetensors")
    with torch.inference_mode():
        for got, expected in zip(restored(x, y), converted(x, y)):
            assert torch.equal(got, expected)


# ---------------------------------------------------------------------------- MaxNumBoundingBoxes


def test_max_num_bounding_boxes_on_images(keras3, tmp_path):
    """On a plain image tensor MaxNumBoundingBoxes returns it unchanged (then a Conv2D)."""
    seed(keras3)
    layers = keras3.layers
    model = keras3.Sequential(
        [
            keras3.Input((6, 6, 3)),
            layers.MaxNumBoundingBoxes(max_number=2, name="boxes"),
            layers.Conv2D(2, 3, name="conv"),
        ],
        name="boxes",
    )
    _check(keras3, model, [np.random.default_rng(5).normal(size=(2, 6, 6, 3)).astype(np.float32)], tmp_path)


# ---------------------------------------------------------------------------- HashedCrossing


def _random_strings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Strings of 0..90 code points (ASCII to CJK), so every FarmHash length branch is hit."""
    return np.array(
        ["".join(chr(int(c)) for c in rng.integers(32, 0x3000, rng.integers(0, 90))) for _ in range(n)], dtype=object
    )


def test_hashed_crossing_matches_tensorflow():
    """The runtime against ``tf.sparse.cross_hashed`` on 300 random rows: strings of every length
    class, int64 over its whole range and small ints, two and three features, three bucket counts."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(7)
    n = 300
    features = {
        "s": _random_strings(rng, n),
        "t": _random_strings(rng, n),
        "i": rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64),
        "j": rng.integers(-50, 50, n).astype(np.int64),
    }
    for kinds in ("st", "si", "ij", "sij"):
        for bins in (1, 7, 1_000_003):
            values = [features[k] for k in kinds]
            tf_in = [tf.constant(v.astype(str) if k in "st" else v)[:, None] for v, k in zip(values, kinds)]
            want = tf.sparse.to_dense(tf.sparse.cross_hashed(tf_in, num_buckets=bins)).numpy()
            module = HashedCrossing(HashedCrossingConfig(num_bins=bins))
            got = module(*[v[:, None] if k in "st" else torch.from_numpy(v)[:, None] for v, k in zip(values, kinds)])
            assert np.array_equal(got.numpy(), want), (kinds, bins)


def test_hashed_crossing_layer(keras3, tmp_path):
    """Keras 3 HashedCrossing on (B, 1) string x int features, int and one_hot modes, ``.keras`` and
    ``.h5`` (its config has no ``trainable`` key, which the legacy ``.h5`` reader must not take for an
    op node)."""
    layers = keras3.layers
    words = keras3.Input((1,), dtype="string", name="words")
    ids = keras3.Input((1,), dtype="int64", name="ids")
    outs = [
        layers.HashedCrossing(num_bins=11, name="cross")([words, ids]),
        layers.HashedCrossing(num_bins=5, output_mode="one_hot", name="cross_hot")([words, ids]),
    ]
    model = keras3.Model([words, ids], outs, name="crossing")
    rng = np.random.default_rng(8)
    texts = _random_strings(rng, 6)[:, None]
    numbers = rng.integers(-(2**40), 2**40, (6, 1)).astype(np.int64)
    _check(keras3, model, [texts, numbers], tmp_path)
    refusal = {"num_bins": 3, "output_mode": "multi_hot"}
    _refusal("HashedCrossing", refusal, "output_mode is 'multi_hot'")


def test_pipeline_passes_mask(keras3, tmp_path):
    """Embedding(mask_zero) → Pipeline([Identity, Rescaling]) → LSTM: both inner layers pass the
    mask on in Keras 3, so the LSTM skips the padded steps."""
    seed(keras3)
    layers = keras3.layers
    model = keras3.Sequential(
        [
            keras3.Input((6,), dtype="int32"),
            layers.Embedding(9, 4, mask_zero=True, name="embed"),
            layers.Pipeline([layers.Identity(), layers.Rescaling(2.0)], name="front"),
            layers.LSTM(3, name="lstm"),
        ],
        name="pipeline_mask",
    )
    ids = np.random.default_rng(9).integers(1, 9, (3, 6)).astype(np.int32)
    ids[0, 3:] = 0
    _check(keras3, model, [ids], tmp_path)


def test_tf_keras_hashed_crossing(tmp_path):
    """tf_keras' HashedCrossing hashes as Keras 3's does (``tf.sparse.cross_hashed``)."""
    k = import_keras("tf_keras")
    words = k.Input((1,), dtype="string", name="words")
    ids = k.Input((1,), dtype="int64", name="ids")
    model = k.Model([words, ids], k.layers.HashedCrossing(num_bins=11, name="cross")([words, ids]), name="tf_crossing")
    rng = np.random.default_rng(9)
    _check(
        k, model, [_random_strings(rng, 6)[:, None], rng.integers(-(2**40), 2**40, (6, 1)).astype(np.int64)], tmp_path
    )
