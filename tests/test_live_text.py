"""Live parity of the text layers with Keras: ``TextVectorization`` and ``StringLookup`` in int mode.

Models take raw strings (``Input(dtype="string")``). An adapted vocabulary is saved only in the
``.keras`` archive's assets, so those models are checked from ``.keras`` and as live models (the
reader takes the live layer's vocabulary); a vocabulary given in the config is also checked from
legacy ``.h5``. Each model is compared layer by layer with Keras on texts chosen to trip a
tokenizer: punctuation, upper case, accented and non-Latin letters, Unicode spaces (not separators
for TensorFlow), unknown words, empty strings and texts longer than ``output_sequence_length``.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from torch_lstm_probe.converters.common import Context
from torch_lstm_probe.converters.registry import lookup
from torch_lstm_probe.converters.spec import KerasVersion, LayerSpec

import torch_lstm_probe as tlp
from tests.helpers import assert_close, assert_model_parity, keras_reference, save, seed
from torch_lstm_probe.errors import InputError, KerasFileError, UnsupportedOptionError
from torch_lstm_probe.layers.text import standardize_text

pytestmark = pytest.mark.keras

ADAPT = [
    "The cat sat on the mat.",
    "ça va? über straße",
    "東京 tokyo! tokyo",
    "café ñandú don't stop",
    "e.g. usa 😀 emoji",
]
TRICKY = [
    "Ça VA? ÜBER straße",
    "東京 tokyo!",
    "The cat sat on the mat.",
    "",
    "   extra    spaces\tand\ttabs\n",
    "unknown zebra words here",
    "a very long text with many more words than the output sequence length allows",
    "don't-stop, e.g. U.S.A.!",
    "ñandú ÑANDÚ café CAFÉ",
    "a\u00a0b c\u3000d \x1c e",
    "😀 emoji 😀",
    "tokyo",
]


def _texts(texts: list[str] = TRICKY) -> np.ndarray:
    """Texts as Keras' ``Input(shape=(1,), dtype="string")`` takes them: ``(N, 1)``."""
    return np.array(texts, dtype=object)[:, None]


def _text_lstm(klib, **options):
    """Input((1,), string) -> TextVectorization(length 8) -> Embedding(mask_zero) -> LSTM -> Dense."""
    seed(klib)
    tv = klib.layers.TextVectorization(output_sequence_length=8, name="tv", **options)
    if "vocabulary" not in options:
        tv.adapt(ADAPT)
    inp = klib.Input((1,), dtype="string", name="text")
    x = klib.layers.Embedding(tv.vocabulary_size(), 5, mask_zero=True, name="embed")(tv(inp))
    x = klib.layers.LSTM(4, name="lstm")(x)
    return klib.Model(inp, klib.layers.Dense(2, name="head")(x), name="text_lstm")


def test_text_vectorization_lstm_keras(keras3, tmp_path):
    """The adapted model from .keras matches Keras layer by layer; .h5 keeps no adapted vocabulary."""
    model = _text_lstm(keras3)
    converted = tlp.load_keras(save(model, tmp_path, "keras"))
    assert_model_parity(keras3, model, converted, [_texts()])
    reloaded = keras3.saving.load_model(tmp_path / "text_lstm.keras")
    ids = np.asarray(reloaded.get_layer("tv")(_texts()))
    assert_close(tlp.probe(converted, TRICKY, layers=["tv"])["tv"], ids, 0, "ids of Keras' reloaded model")
    with pytest.raises(KerasFileError, match=r"layer 'tv' \(TextVectorization\).*no vocabulary.*\.keras"):
        tlp.load_keras(save(model, tmp_path, "h5"))


def test_text_vectorization_config_vocabulary(keras3, tmp_path):
    """A vocabulary given to the layer lives in its config: .keras and legacy .h5 both carry it."""
    model = _text_lstm(keras3, vocabulary=["the", "cat", "über", "東京", "tokyo", "ça", "va", "😀"])
    reference = keras_reference(keras3, model, [_texts()])
    for fmt in ("keras", "h5"):
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        assert_model_parity(keras3, model, converted, [_texts()], reference=reference)


def test_text_vectorization_tf_keras(tf_keras, tmp_path):
    """tf_keras saves the adapted vocabulary in .keras too (its .h5 saver refuses the layer)."""
    model = _text_lstm(tf_keras)
    assert_model_parity(tf_keras, model, tlp.load_keras(save(model, tmp_path, "keras")), [_texts()])


@pytest.mark.parametrize(
    "standardize, split, length",
    [
        (standardize, split, length)
        for standardize in (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")
        for split, length in (("whitespace", 6), ("whitespace", None), ("character", 10), (None, None), (None, 3))
    ],
)
def test_standardize_and_split_modes(keras3, tmp_path, standardize, split, length):
    """Each standardize and split mode, padded / truncated to a length or to the longest row."""
    tv = keras3.layers.TextVectorization(standardize=standardize, split=split, output_sequence_length=length, name="tv")
    tv.adapt(ADAPT + TRICKY[:3] if split is None else ADAPT)
    model = keras3.Sequential([keras3.Input((1,), dtype="string"), tv], name="tv_only")
    converted = tlp.load_keras(save(model, tmp_path, "keras"))
    assert_model_parity(keras3, model, converted, [_texts()])


def test_lower_leaves_non_ascii_letters(keras3):
    """Keras 3 lowercases with tf.strings.lower and no encoding: ASCII letters only."""
    tv = keras3.layers.TextVectorization(standardize="lower", split=None, vocabulary=["x"])
    text = "Ça VA ÜBER İstanbul ΣΟΦΊΑ"
    assert standardize_text(text, "lower") == "Ça va Über İstanbul ΣΟΦΊΑ"
    assert tv._preprocess([text]).numpy()[0].decode() == standardize_text(text, "lower")


def _tokens() -> np.ndarray:
    return np.array(
        [["the", "Cat", "", ""], ["東京", "tokyo", "zebra", ""], ["", "", "", ""], ["ça", "über", "cat", "😀"]],
        dtype=object,
    )


def test_string_lookup_pre_split_tokens(keras3, tmp_path):
    """Input((4,), string) -> StringLookup(mask "", adapted) -> Embedding(mask_zero) -> LSTM -> Dense."""
    seed(keras3)
    lookup_layer = keras3.layers.StringLookup(mask_token="", name="lookup")
    lookup_layer.adapt(np.array([["the", "cat", "tokyo", "東京"], ["ça", "über", "the", "😀"]]))
    inp = keras3.Input((4,), dtype="string", name="tokens")
    x = keras3.layers.Embedding(lookup_layer.vocabulary_size(), 5, mask_zero=True, name="embed")(lookup_layer(inp))
    model = keras3.Model(inp, keras3.layers.Dense(2, name="head")(keras3.layers.LSTM(4, name="lstm")(x)), name="lk")
    assert_model_parity(keras3, model, tlp.load_keras(save(model, tmp_path, "keras")), [_tokens()])


@pytest.mark.parametrize(
    "options",
    [
        dict(vocabulary=["the", "cat", "", "tokyo"], mask_token=None),  # "" is a plain token without a mask
        dict(vocabulary=["[PAD]", "[OOV]", "the", "cat"], mask_token="[PAD]", oov_token="[OOV]"),
        dict(vocabulary=["the", "Cat", "", "東京", "tokyo", "zebra", "ça", "über", "cat", "😀"], num_oov_indices=0),
        dict(vocabulary=["the", "cat"], mask_token="", num_oov_indices=5),
    ],
    ids=["no_mask", "special_prefix", "no_oov", "hashed_oov"],
)
def test_string_lookup_config_vocabulary(keras3, tmp_path, options):
    """A config vocabulary, with special tokens at its start or none, no OOV index or several (unknown
    tokens hashed with FarmHash, on tokens of every length class of the hash): .keras and .h5."""
    layer = keras3.layers.StringLookup(name="lookup", **options)
    model = keras3.Sequential([keras3.Input((4,), dtype="string"), layer], name="lookup_only")
    reference = keras_reference(keras3, model, [_tokens()])
    for fmt in ("keras", "h5"):
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        assert_model_parity(keras3, model, converted, [_tokens()], reference=reference)
    if options.get("num_oov_indices") == 0:
        with pytest.raises(InputError, match=r"'lookup'.*num_oov_indices=0.*'unseen'"):
            converted([["the", "unseen", "cat", ""]])
    if options.get("num_oov_indices", 1) > 1:
        rng = np.random.default_rng(3)
        words = ["".join(rng.choice(list("aé東😀 z"), size=n)) for n in range(0, 140)]
        expected = np.asarray(layer(np.array(words, dtype=object)))
        assert_close(converted.layer("lookup")(words), expected, 0, "hashed OOV ids")
        assert len(set(expected.tolist())) == 6  # the mask id and all five OOV ids occur


def test_save_load_round_trip_and_inputs(keras3, tmp_path):
    """tlp.save/tlp.load keep the vocabulary; text inputs take (N,) or (N, 1); other values are refused."""
    model = _text_lstm(keras3)
    converted = tlp.load_keras(save(model, tmp_path, "keras"))
    tlp.save(converted, tmp_path / "text.safetensors")
    restored = tlp.load(tmp_path / "text.safetensors")
    with torch.inference_mode():
        expected = converted(_texts())
        assert_close(restored(TRICKY), expected, 0, "restored, (N,) list")
        assert_close(restored(tuple(TRICKY)), expected, 0, "restored, tuple")
        assert_close(restored(np.array(TRICKY)), expected, 0, "restored, numpy str array")
        assert_close(restored({"text": _texts()}), expected, 0, "restored, by name")
    assert restored.layer("tv").get_config() == converted.layer("tv").get_config()
    acts = tlp.probe(restored, ["some text", "tokyo"])
    assert acts["tv"].dtype == torch.int64 and tuple(acts["tv"].shape) == (2, 8)
    with pytest.raises(InputError, match=r"Input 'text'.*tensor"):
        restored(torch.zeros(2, 1))
    with pytest.raises(InputError, match=r"Input 'text'.*dtype float"):
        restored(np.zeros((2, 1)))
    with pytest.raises(InputError, match=r"Input 'text'.*element 1 of type int"):
        restored(["a", 1])
    with pytest.raises(InputError, match=r"Input 'text'.*batch of texts.*one str"):
        restored("one text")
    with pytest.raises(InputError, match=r"Input 'text'.*shape \(None, 1\).*\(2, 2\)"):
        restored([["a", "b"], ["c", "d"]])
    with pytest.raises(InputError, match=r"Input 'text'.*not valid Unicode"):
        restored(["bad \ud800 text"])


def _layer_spec(class_name: str, config: dict) -> LayerSpec:
    return LayerSpec(name="text", class_name=class_name, config=config, path="text")


def _convert(spec: LayerSpec):
    ctx = Context(source="<test>", keras_version=KerasVersion(3, 15))
    return lookup(spec, ctx)(spec, ctx)


def test_refused_options(keras3):
    """Other output modes, n-grams, code in standardize/split, salted OOV hashing: typed errors naming the option."""
    tv = keras3.layers.TextVectorization
    base = tv(vocabulary=["a", "b"]).get_config()
    cases = [
        (tv(output_mode="multi_hot", vocabulary=["a"]).get_config(), "'output_mode' is 'multi_hot'"),
        ({**base, "ngrams": 2}, "'ngrams' is 2"),
        ({**base, "ragged": True}, "'ragged' is True"),
        ({**base, "standardize": {"class_name": "function", "config": "my_clean"}}, "'standardize' is a custom"),
        ({**base, "split": {"class_name": "function", "config": "my_split"}}, "'split' is a custom"),
        ({**base, "standardize": "upper"}, "'standardize' is 'upper'"),
        ({**base, "vocabulary": "/etc/words.txt"}, "file path"),
    ]
    for config, message in cases:
        with pytest.raises(UnsupportedOptionError, match=rf"layer 'text' \(TextVectorization\).*{message}"):
            _convert(_layer_spec("TextVectorization", config))
    sl = keras3.layers.StringLookup
    for config, message in [
        (sl(vocabulary=["a"], num_oov_indices=2, salt=7).get_config(), "'salt' is \\[7, 7\\].*SipHash"),
        (sl(vocabulary=["a"], invert=True).get_config(), "'invert' is True"),
        (sl(vocabulary=["a"], output_mode="one_hot").get_config(), "'output_mode' is 'one_hot'"),
    ]:
        with pytest.raises(UnsupportedOptionError, match=rf"layer 'text' \(StringLookup\).*{message}"):
            _convert(_layer_spec("StringLookup", config))


def test_damaged_vocabulary_file(keras3, tmp_path):
    """A vocabulary file that repeats a token (Keras refuses it too) is a KerasFileError."""
    tv = keras3.layers.TextVectorization(name="tv")
    tv.adapt(ADAPT)
    path = save(keras3.Sequential([keras3.Input((1,), dtype="string"), tv], name="tv_only"), tmp_path, "keras")
    damaged = tmp_path / "damaged.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data + b"\nthe" if info.filename.endswith("vocabulary.txt") else data)
    with pytest.raises(KerasFileError, match=r"layer 'tv' \(TextVectorization\).*repeats the token\(s\) \['the'\]"):
        tlp.load_keras(damaged)


# Words holding characters that str.splitlines() breaks on but TensorFlow's whitespace split keeps
# inside a token (\x1c, \x85, \u2028): a live layer's vocabulary keeps them whole.
LINE_BREAKING = ["x\x1cy tokyo", "line\u2028sep café", "next\x85line Ça"]


def test_in_memory_adapted_text_vectorization(klib):
    """A live model with an adapted TextVectorization: the reader takes get_vocabulary() from the layer."""
    tv = klib.layers.TextVectorization(output_sequence_length=8, name="tv")
    tv.adapt(ADAPT + LINE_BREAKING)
    seed(klib)
    inp = klib.Input((1,), dtype="string", name="text")
    x = klib.layers.Embedding(tv.vocabulary_size(), 5, mask_zero=True, name="embed")(tv(inp))
    model = klib.Model(inp, klib.layers.Dense(2, name="head")(klib.layers.LSTM(4, name="lstm")(x)), name="live_tv")
    assert any("\x1c" in token for token in tv.get_vocabulary())
    converted = tlp.load_keras(model)
    assert_model_parity(klib, model, converted, [_texts(TRICKY + LINE_BREAKING)])
    assert model.get_layer("tv").get_config()["vocabulary"] is None  # the live layer is left as it was


def test_in_memory_adapted_string_lookup(klib):
    """A live model with an adapted StringLookup (mask "", two hashed OOV ids) on pre-split tokens."""
    layer = klib.layers.StringLookup(mask_token="", num_oov_indices=2, name="lookup")
    layer.adapt(np.array([["the", "cat", "tokyo", "東京"], ["ça", "über", "x\x1cy", "😀"]], dtype=object))
    model = klib.Sequential([klib.Input((4,), dtype="string"), layer], name="live_lookup")
    tokens = np.concatenate([_tokens(), np.array([["x\x1cy", "x", "y", "line\u2028sep"]], dtype=object)])
    assert_model_parity(klib, model, tlp.load_keras(model), [tokens])
