"""Converters for Keras 3 text layers: ``TextVectorization`` and ``StringLookup`` in int mode.

=====================================  ======================================================
Keras                                  runtime config
=====================================  ======================================================
config ``vocabulary`` (a list)         ``vocabulary`` (special tokens at its start dropped)
or ``assets/<path>/vocabulary.txt``    (written by ``adapt``; one token a line, as Keras reads it)
``standardize``, ``split``             the same names (built-in modes only)
``output_sequence_length``             the same
``mask_token``, ``num_oov_indices``    the same (TextVectorization: ``""`` and 1); unknown
                                       tokens hash into several OOV ids with FarmHash
=====================================  ======================================================

A vocabulary file is read the way Keras' ``load_assets`` reads it: UTF-8, ``str.splitlines()``,
trailing empty lines dropped (tf_keras: split on newlines only, nothing dropped); then, as in ``set_vocabulary``, a prefix of exactly the mask and
OOV tokens is dropped, and a repeated token or a misplaced mask token is an error.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from torch_lstm_probe.errors import KerasFileError, UnsupportedOptionError
from torch_lstm_probe.layers.text import (
    SPLIT_MODES,
    STANDARDIZE_MODES,
    StringLookupConfig,
    TextVectorizationConfig,
)

from .common import Context, ModuleSpec, check_keys, config_int, layer_label, refuse_unless, unpack_weights
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_text_vectorization", "convert_string_lookup"]

_ENCODINGS = ["utf-8", "UTF-8", "utf8", "UTF8"]
# Where Keras 3 saves an adapted vocabulary, inside the layer's assets folder. TextVectorization
# writes it twice (its own and its inner StringLookup's); Keras loads the inner one last, so it wins.
_TEXT_VECTORIZATION_ASSETS = ("_lookup_layer/vocabulary.txt", "vocabulary.txt")
_STRING_LOOKUP_ASSETS = ("vocabulary.txt",)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_code(layer: LayerSpec, ctx: Context, key: str, modes: tuple[Any, ...], default: str, fix: str) -> Any:
    """``config[key]`` (``default`` when missing) if it is a built-in mode; a serialized function or
    another value is refused."""
    value = layer.config.get(key, default)
    if value in modes:
        return value
    if isinstance(value, Mapping):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is a custom function {_short(value)}, and this loader "
            f"never runs code from a file. Expected one of {list(modes)}. Fix: {fix}"
        )
    raise UnsupportedOptionError(
        f"{layer_label(layer, ctx)}: config key {key!r} is {_short(value)}. Expected one of {list(modes)}."
    )


def _vocabulary_lines(layer: LayerSpec, ctx: Context, names: tuple[str, ...]) -> list[str] | None:
    """The lines of the layer's saved vocabulary file, read as Keras' ``load_assets`` reads them."""
    name = next((n for n in names if n in layer.assets), None)
    if name is None:
        return None
    try:
        text = layer.assets[name].decode("utf-8")
    except UnicodeDecodeError as err:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: its vocabulary file {name!r} is not UTF-8 text ({err}). Keras writes "
            "UTF-8: the file is damaged or was edited."
        ) from None
    if ctx.library == "tf_keras":  # tf_keras splits on "\n" only, after universal-newline reading
        return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = text.splitlines()
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _raw_vocabulary(layer: LayerSpec, ctx: Context, asset_names: tuple[str, ...]) -> list[str]:
    """The vocabulary from the config when it is stored there, else from the archive's assets."""
    value = layer.config.get("vocabulary")
    if isinstance(value, str):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'vocabulary' is the file path {_short(value)}; this loader "
            "reads nothing outside the model file. Expected a list of tokens. Fix: build the layer with "
            "vocabulary=layer.get_vocabulary() and save again."
        )
    if value is None:
        lines = _vocabulary_lines(layer, ctx, asset_names)
        if lines is None:
            raise KerasFileError(
                f"{layer_label(layer, ctx)}: the file holds no vocabulary: config key 'vocabulary' is null and "
                f"there is no {asset_names[-1]!r} among the layer's assets {sorted(layer.assets)}. An adapted "
                "vocabulary is saved only in a .keras archive (not in a legacy .h5, model.to_json() or a live "
                "model's config). Fix: save the model as .keras and load that file, or build the layer with "
                "vocabulary=layer.get_vocabulary()."
            )
        return lines
    if not isinstance(value, (list, tuple)) or not all(isinstance(token, str) for token in value):
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config key 'vocabulary' is {_short(value)}. Expected a list of strings. "
            "The file is damaged or was edited."
        )
    return list(value)


def _tokens(
    layer: LayerSpec, ctx: Context, raw: list[str], mask: str | None, oov: Any, num_oov: int
) -> tuple[str, ...]:
    """The tokens after the special ones, checked as Keras' ``set_vocabulary`` checks them."""
    special = [mask] * (mask is not None) + [oov] * num_oov
    tokens = raw[len(special) :] if raw[: len(special)] == special else raw
    problem = None
    if not raw:
        problem = "is empty"
    elif len(set(tokens)) != len(tokens):
        repeated = sorted(token for token, count in Counter(tokens).items() if count > 1)
        problem = f"repeats the token(s) {_short(repeated)}"
    elif mask is not None and mask in tokens:
        problem = f"holds the mask token {mask!r} after the special tokens {special}"
    if problem is not None:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: the vocabulary {problem}; Keras refuses to load it too. Expected distinct "
            "tokens, the mask and OOV tokens only at its start. The file is damaged or was edited."
        )
    max_tokens = layer.config.get("max_tokens")
    if max_tokens is not None and len(special) + len(tokens) > config_int(layer, ctx, "max_tokens", minimum=2):
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: the vocabulary has {len(special) + len(tokens)} entries with the special "
            f"tokens, above max_tokens={max_tokens}; Keras refuses to load it too. The file is damaged or was edited."
        )
    return tuple(tokens)


def _refuse_common(layer: LayerSpec, ctx: Context) -> None:
    """Options both layers refuse: other output modes, sparse or ragged output, TF-IDF, other encodings."""
    refuse_unless(
        layer,
        ctx,
        "output_mode",
        ["int"],
        "Only integer ids are reproduced. Fix: output ids (output_mode='int') and encode them after the layer.",
    )
    refuse_unless(layer, ctx, "sparse", [False], "Sparse output is not reproduced.")
    refuse_unless(layer, ctx, "idf_weights", [None], "TF-IDF weights are not used in int mode.")
    refuse_unless(layer, ctx, "encoding", _ENCODINGS, "Text is read as UTF-8 only.")


@register("TextVectorization")
def convert_text_vectorization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``TextVectorization(output_mode="int")`` →
    :class:`torch_lstm_probe.layers.text.TextVectorization`."""
    check_keys(
        layer,
        ctx,
        {"max_tokens", "standardize", "split", "ngrams", "output_mode", "output_sequence_length", "vocabulary"}
        | {"sparse", "ragged", "idf_weights", "encoding"},
        {"pad_to_max_tokens", "vocabulary_size"},  # pad_to_max_tokens shapes multi-hot output only
    )
    unpack_weights(layer, ctx, {})
    _refuse_common(layer, ctx)
    refuse_unless(layer, ctx, "ragged", [False], "Ragged output is not reproduced. Fix: set ragged=False.")
    refuse_unless(
        layer, ctx, "ngrams", [None], "N-grams are not reproduced. Fix: set ngrams=None, or form n-grams beforehand."
    )
    standardize = _refuse_code(
        layer,
        ctx,
        "standardize",
        STANDARDIZE_MODES,
        "lower_and_strip_punctuation",
        "standardize the text before calling the model and set standardize=None (or a built-in mode).",
    )
    split = _refuse_code(
        layer,
        ctx,
        "split",
        SPLIT_MODES,
        "whitespace",
        "split the text before calling the model and use a StringLookup on the tokens (or a built-in split).",
    )
    length = layer.config.get("output_sequence_length")
    if length is not None:
        length = config_int(layer, ctx, "output_sequence_length", minimum=0)
    raw = _raw_vocabulary(layer, ctx, _TEXT_VECTORIZATION_ASSETS)
    vocabulary = _tokens(layer, ctx, raw, "", "[UNK]", 1)
    config = TextVectorizationConfig(
        vocabulary=vocabulary, standardize=standardize, split=split, output_sequence_length=length
    )
    return ModuleSpec("TextVectorization", config)


@register("StringLookup")
def convert_string_lookup(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``StringLookup(output_mode="int")`` → :class:`torch_lstm_probe.layers.text.StringLookup`."""
    check_keys(
        layer,
        ctx,
        {"max_tokens", "num_oov_indices", "mask_token", "oov_token", "vocabulary", "invert", "output_mode"}
        | {"sparse", "idf_weights", "encoding", "vocabulary_dtype"},
        # pad_to_max_tokens shapes multi-hot output only; oov_method picks the hash of integer
        # tokens (strings always use FarmHash); salt matters with several OOV indices only.
        {"pad_to_max_tokens", "vocabulary_size", "oov_method", "salt"},
    )
    unpack_weights(layer, ctx, {})
    _refuse_common(layer, ctx)
    refuse_unless(layer, ctx, "invert", [False], "The inverse lookup (id → token) is not converted.")
    refuse_unless(layer, ctx, "vocabulary_dtype", ["string"])
    num_oov = config_int(layer, ctx, "num_oov_indices", 1, minimum=0)
    if num_oov > 1:
        refuse_unless(
            layer,
            ctx,
            "salt",
            [None],
            "A salt hashes unknown tokens with SipHash, which is not reproduced. Fix: drop the salt (FarmHash "
            "buckets are reproduced) or set num_oov_indices=1.",
        )
    mask = layer.config.get("mask_token")
    oov = layer.config.get("oov_token", "[UNK]")
    if not (mask is None or isinstance(mask, str)) or not isinstance(oov, str):
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: mask_token is {_short(mask)} and oov_token {_short(oov)}. Expected strings "
            "(mask_token may be null). The file is damaged or was edited."
        )
    vocabulary = _tokens(layer, ctx, _raw_vocabulary(layer, ctx, _STRING_LOOKUP_ASSETS), mask, oov, num_oov)
    return ModuleSpec("StringLookup", StringLookupConfig(vocabulary, num_oov_indices=num_oov, mask_token=mask))
