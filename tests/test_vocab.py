"""Vocabularies: Keras Tokenizer JSON, word lists and dicts label ids and encode texts exactly as tf_keras does."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from torch_lstm_probe.analysis.vocab import (
    KERAS_FILTERS,
    PAD_TOKEN,
    UNK_TOKEN,
    Vocabulary,
    load_vocabulary,
    read_text_lines,
)
from torch_lstm_probe.errors import InputError

FIT_TEXTS = [
    "The cat sat on the mat.",
    "The dog ate my homework!! The dog, the DOG.",
    "Don't panic: it's fine -- really (fine).",
    "",
    "UPPER lower MiXeD cat cat cat Café ÉCOLE école",
    "tab\there new\nline a-b a_b e-mail@x.org",
]
NEW_TEXTS = [
    "the cat, THE CAT; the unknown zebra",
    "",
    "dog dog dog dog dog dog dog dog dog dog dog dog dog dog",
    "Café école ÉCOLE!",
    "don't it's fine",
    "never seen words only",
    "a-b a_b e-mail@x.org tab\there",
]
PAD_GRID = [(p, t, m) for p in ("pre", "post") for t in ("pre", "post") for m in (None, 1, 3, 12)]

TOKENIZER_CONFIGS = [
    pytest.param(dict(), id="defaults"),
    pytest.param(dict(num_words=5), id="num_words5"),
    pytest.param(dict(oov_token="<OOV>"), id="oov"),
    pytest.param(dict(num_words=5, oov_token="<OOV>"), id="num_words5-oov"),
    pytest.param(dict(num_words=1, oov_token="<OOV>"), id="num_words1-oov"),
    pytest.param(dict(lower=False), id="no-lower"),
    pytest.param(dict(lower=False, num_words=8, oov_token="[UNK]"), id="no-lower-num_words8-oov"),
    pytest.param(dict(filters=""), id="no-filters"),
    pytest.param(dict(filters="", oov_token="<OOV>"), id="no-filters-oov"),
    pytest.param(dict(filters=".,!", lower=False), id="some-filters-no-lower"),
    pytest.param(dict(split="-", filters="!.,"), id="split-dash"),
    pytest.param(dict(char_level=True), id="char-level"),
    pytest.param(dict(char_level=True, lower=False, num_words=10, oov_token="~"), id="char-level-oov"),
]


def _keras_pad(tf_keras, sequences, **kwargs):
    return tf_keras.preprocessing.sequence.pad_sequences(sequences, **kwargs)


@pytest.mark.keras
@pytest.mark.parametrize("config", TOKENIZER_CONFIGS)
def test_tokenizer_json_matches_tf_keras(tf_keras, config, tmp_path):
    tokenizer = tf_keras.preprocessing.text.Tokenizer(**config)
    tokenizer.fit_on_texts(FIT_TEXTS)
    vocab = load_vocabulary(tokenizer.to_json())
    assert vocab.kind == "tokenizer"
    expected = tokenizer.texts_to_sequences(NEW_TEXTS + FIT_TEXTS)
    assert vocab.texts_to_sequences(NEW_TEXTS + FIT_TEXTS) == expected
    for padding, truncating, maxlen in PAD_GRID:
        want = _keras_pad(tf_keras, expected, maxlen=maxlen, padding=padding, truncating=truncating)
        got = vocab.texts_to_ids(NEW_TEXTS + FIT_TEXTS, maxlen=maxlen, padding=padding, truncating=truncating)
        assert got.dtype == want.dtype and got.shape == want.shape, (padding, truncating, maxlen)
        np.testing.assert_array_equal(got, want, err_msg=f"{padding=} {truncating=} {maxlen=}")
    # labels: every id the tokenizer knows gets its word back
    for i, word in tokenizer.index_word.items():
        assert vocab.token(i) == word
    assert vocab.token(0) == PAD_TOKEN
    # the same tokenizer from a JSON file, and from the tokenizer object itself
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer.to_json(), encoding="utf-8")
    for source in (path, str(path), tokenizer):
        assert load_vocabulary(source).texts_to_sequences(NEW_TEXTS) == expected[: len(NEW_TEXTS)]


@pytest.mark.keras
@pytest.mark.parametrize(("value", "dtype"), [(0, "int64"), (-1, "int32"), (0.5, "float32")])
def test_padding_value_and_dtype_match_tf_keras(tf_keras, value, dtype):
    tokenizer = tf_keras.preprocessing.text.Tokenizer(oov_token="<OOV>")
    tokenizer.fit_on_texts(FIT_TEXTS)
    vocab = load_vocabulary(tokenizer.to_json())
    want = _keras_pad(tf_keras, tokenizer.texts_to_sequences(NEW_TEXTS), maxlen=9, value=value, dtype=dtype)
    got = vocab.texts_to_ids(NEW_TEXTS, maxlen=9, value=value, dtype=dtype)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.keras
def test_token_lists_match_tf_keras(tf_keras):
    tokenizer = tf_keras.preprocessing.text.Tokenizer(num_words=6, oov_token="<OOV>")
    tokenizer.fit_on_texts(FIT_TEXTS)
    vocab = load_vocabulary(tokenizer.to_json())
    lists = [["The", "cat", "sat!"], [], ["DOG", "zebra"]]
    assert vocab.texts_to_sequences(lists) == tokenizer.texts_to_sequences(lists)


def test_word_index_dict_defaults_by_hand():
    vocab = load_vocabulary({"the": 1, "cat": 2, "sat": 3})
    assert vocab.kind == "dict" and vocab.oov_token is None and len(vocab) == 4
    assert vocab.texts_to_sequences(["The cat, the DOG sat!"]) == [[1, 2, 1, 3]]
    np.testing.assert_array_equal(vocab.texts_to_ids(["The cat, the DOG sat!"], maxlen=6), [[0, 0, 1, 2, 1, 3]])
    np.testing.assert_array_equal(
        vocab.texts_to_ids(["The cat, the DOG sat!"], maxlen=6, padding="post"), [[1, 2, 1, 3, 0, 0]]
    )
    np.testing.assert_array_equal(vocab.texts_to_ids(["the cat sat"], maxlen=2), [[2, 3]])
    np.testing.assert_array_equal(vocab.texts_to_ids(["the cat sat"], maxlen=2, truncating="post"), [[1, 2]])
    ids = vocab.texts_to_ids(["cat", "", "the cat sat the"])  # maxlen None: the longest
    assert ids.shape == (3, 4) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [[0, 0, 0, 2], [0, 0, 0, 0], [1, 2, 3, 1]])
    assert vocab.texts_to_ids([]).shape == (0, 0)


def test_text_vectorization_list_as_is():
    words = ["", "[UNK]", "the", "cat", "sat"]  # TextVectorization.get_vocabulary()
    vocab = load_vocabulary(words)
    assert vocab.kind == "list" and vocab.oov_token == "[UNK]" and len(vocab) == 5
    assert vocab.tokens([0, 1, 2, 4, 9]) == [PAD_TOKEN, "[UNK]", "the", "sat", "[UNK]"]
    assert vocab.texts_to_sequences(["the zebra sat"]) == [[2, 1, 4]]


def test_word_list_file_first_line_is_id_0(tmp_path):
    path = tmp_path / "words.txt"
    path.write_bytes("\ufeff\r\nthe\r\ncat\r\ncafé\r\n".encode())  # BOM and CRLF, like an editor may save it
    vocab = load_vocabulary(path)
    assert vocab.kind == "list" and vocab.source == str(path)
    assert vocab.tokens([0, 1, 2, 3, 4]) == [PAD_TOKEN, "the", "cat", "café", UNK_TOKEN]
    assert vocab.texts_to_sequences(["The CAFÉ cat dog"]) == [[1, 3, 2]]  # unknown words dropped, as Keras does
    path.write_text("<pad>\nthe\n", encoding="utf-8")
    assert load_vocabulary(str(path)).tokens([0, 1]) == ["<pad>", "the"]


def test_json_files_of_each_kind(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["", "[UNK]", "hi"]))
    assert load_vocabulary(listed).tokens([2, 7]) == ["hi", "[UNK]"]
    mapping = tmp_path / "word_index.txt"  # content starting with "{" is JSON whatever the suffix
    mapping.write_text(json.dumps({"hi": 1, "there": 2}))
    assert load_vocabulary(mapping).texts_to_sequences(["Hi there!"]) == [[1, 2]]
    assert load_vocabulary(' ["", "a"]').tokens([1]) == ["a"]


def test_tokens_nested_and_tensors():
    vocab = load_vocabulary({"a": 1, "b": 2})
    assert vocab.tokens(np.array([[1, 2], [0, 5]], dtype=np.int32)) == [["a", "b"], [PAD_TOKEN, UNK_TOKEN]]
    assert vocab.tokens(torch.tensor([2, 1, -3])) == ["b", "a", UNK_TOKEN]
    assert vocab.token(np.int64(2)) == "b"
    assert "a" in vocab and "c" not in vocab


def test_tokenizer_quirks_by_hand():
    """Keras keeps index_word apart from word_index, and ids >= num_words become the OOV id (or vanish)."""
    config = {
        "num_words": 3,
        "filters": list("!?"),  # Keras accepts a list of characters
        "lower": True,
        "split": " ",
        "char_level": False,
        "oov_token": "<oov>",
        "document_count": 2,
        "word_counts": "{}",
        "word_docs": "{}",
        "index_docs": "{}",
        "word_index": json.dumps({"<oov>": 1, "a": 2, "b": 3, "c": 4}),
        "index_word": json.dumps({"1": "<oov>", "2": "a", "3": "b", "4": "c", "5": "<oov>"}),
    }
    vocab = load_vocabulary({"class_name": "Tokenizer", "config": config})
    assert vocab.texts_to_sequences(["A b! c? d"]) == [[2, 1, 1, 1]]
    assert vocab.tokens([4, 5]) == ["c", "<oov>"]
    no_oov = load_vocabulary({**config, "oov_token": None})  # a bare get_config() dict
    assert no_oov.texts_to_sequences(["A b! c? d"]) == [[2]]


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ('{"class_name": "Tokenizer", "config": {', "not valid JSON: .* line 1"),
        ('{"class_name": "TextVectorization", "config": {"word_index": "{}"}}', "'TextVectorization' config"),
        ('{"class_name": "Tokenizer", "config": {"num_words": null}}', "no 'word_index'"),
        ('{"config": {"word_index": "{}", "analyzer": "x"}}', r"unknown keys \['analyzer'\]"),
        ('{"config": {"word_index": "[1, 2]"}}', "word_index is a list"),
        ('{"config": {"word_index": "{\\"a\\": 1}", "split": ""}}', "split must be a non-empty string"),
        ('{"config": {"word_index": "{\\"a\\": 1}", "num_words": -2}}', "num_words must be"),
        ('{"config": {"word_index": "{}", "index_word": "{\\"x\\": \\"a\\"}"}}', "index_word key 'x'"),
        ('{"a": -1}', "id of word 'a' is -1"),
        ('{"a": true}', "id of word 'a' is True"),
        ('["a", 3]', "entry 1 is int 3"),
        ("[" * 100000, "nests JSON too deeply|not valid JSON"),
        ("3", "does not exist"),
        (3.5, "Cannot read a vocabulary from float"),
    ],
)
def test_bad_vocabularies(source, match):
    with pytest.raises(InputError, match=match):
        load_vocabulary(source)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_vocabulary(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="not a regular file"):
        load_vocabulary(tmp_path)
    bad = tmp_path / "tok.json"
    bad.write_text('{"config": ')
    with pytest.raises(InputError, match=f"{bad}.*not valid JSON"):
        load_vocabulary(bad)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_vocabulary(latin)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="is empty"):
        load_vocabulary(empty)
    big = tmp_path / "texts.txt"
    big.write_text("a\n" * 100)
    with pytest.raises(InputError, match="has 200 bytes. Expected at most 50"):
        read_text_lines(big, max_bytes=50)
    assert read_text_lines(big) == ["a"] * 100
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(InputError, match="not a regular file"):
            load_vocabulary(fifo)  # refused without blocking on the open


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(padding="middle"), 'padding must be "pre" or "post"'),
        (dict(truncating="both"), 'truncating must be "pre" or "post"'),
        (dict(maxlen=0), "maxlen must be a positive int"),
        (dict(maxlen=True), "maxlen must be a positive int"),
        (dict(dtype="U4"), "integer or float dtype"),
        (dict(dtype="nonsense"), "not a numpy dtype"),
        (dict(value="x"), "value .* must be a number"),
        (dict(dtype="int8", value=1000), "do not fit dtype int8"),
    ],
)
def test_bad_padding_arguments(kwargs, match):
    vocab = load_vocabulary({"a": 1})
    with pytest.raises(InputError, match=match):
        vocab.texts_to_ids(["a a"], **kwargs)


def test_bad_texts():
    vocab = load_vocabulary({"a": 1})
    with pytest.raises(InputError, match="not one str. Fix: pass"):
        vocab.texts_to_ids("a a")
    with pytest.raises(InputError, match="Text 1 is int 5"):
        vocab.texts_to_sequences(["a", 5])
    with pytest.raises(InputError, match="Text 0 is list"):
        vocab.texts_to_sequences([["a", 1]])
    with pytest.raises(InputError, match="ids must be integers"):
        vocab.token(1.0)
    with pytest.raises(InputError, match="use token()"):
        vocab.tokens(3)
    with pytest.raises(InputError, match="dtype float"):
        vocab.tokens([1.5])
    orphan = Vocabulary({"a": 1}, oov_token="<oov>")  # OOV token set after fitting: Keras would emit None
    with pytest.raises(InputError, match="'zz' of text 0 is unknown and the OOV token '<oov>' has no id"):
        orphan.texts_to_sequences(["a zz"])


@pytest.mark.keras
def test_default_filters_are_tf_keras_defaults(tf_keras):
    import inspect

    default = inspect.signature(tf_keras.preprocessing.text.Tokenizer).parameters["filters"].default
    assert KERAS_FILTERS == default
    assert Vocabulary({}).filters == default
