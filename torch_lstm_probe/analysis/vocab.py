"""Vocabularies: token labels for ids, and raw text turned into padded id arrays exactly as Keras does it.

A :class:`Vocabulary` comes from :func:`load_vocabulary`, which accepts

* a Keras ``Tokenizer``'s JSON (``tokenizer.to_json()``, as a string or a file), or the tokenizer itself;
* a plain word list file, one word per line: the first line is id 0 (the padding entry, usually empty),
  line ``k`` (counting from 0) is id ``k``, the way ``TextVectorization.get_vocabulary()`` lists them;
* a Python list of words (index = id), e.g. ``TextVectorization.get_vocabulary()`` (``""`` padding at 0,
  ``"[UNK]"`` at 1), or the layer itself;
* a ``{word: id}`` dict (e.g. ``tokenizer.word_index``), as a dict or a JSON file.

:meth:`Vocabulary.texts_to_ids` reproduces ``Tokenizer.texts_to_sequences`` followed by ``pad_sequences``
of tf_keras: the tokenizer's filters, lowercasing, split string, ``char_level``, ``num_words`` cut-off and
OOV token are honoured. Word lists and dicts are read with the Tokenizer's defaults (lowercase, the default
filters, split on ``" "``); a list or dict holding ``"[UNK]"`` (the OOV token of ``TextVectorization`` and
``StringLookup``) maps unknown words to it, otherwise unknown words are dropped, as a Tokenizer without an
OOV token drops them. ``TextVectorization``'s own standardisation differs (it also strips ``'`` and splits
on any whitespace): to reproduce that layer's ids exactly, run the layer.

Example:
    >>> vocab = load_vocabulary("tokenizer.json")
    >>> vocab.tokens([0, 4, 2])
    ['<pad>', 'movie', 'the']
    >>> vocab.texts_to_ids(["A great movie!"], maxlen=6)    # (1, 6) int32, padded and truncated "pre"
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = [
    "Vocabulary",
    "load_vocabulary",
    "read_text_lines",
    "text_layer_ids",
    "text_tokens",
    "KERAS_FILTERS",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "MAX_VOCABULARY_BYTES",
]

# Tokenizer's default filters: punctuation (without "'"), tab and newline.
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
PAD_TOKEN = "<pad>"  # label of id 0 when the vocabulary has no (non-empty) word for it
UNK_TOKEN = "<unk>"  # label of an id without a word when the vocabulary has no OOV token
KERAS_OOV = "[UNK]"  # TextVectorization / StringLookup OOV token
MAX_VOCABULARY_BYTES = 64 * 1024 * 1024  # largest vocabulary file or JSON text read

# Tokenizer config keys: those that shape ids, and those that are counts only (kept by Keras, unused here).
_TOKENIZER_KEYS = ("num_words", "filters", "lower", "split", "char_level", "oov_token", "word_index", "index_word")
_TOKENIZER_IGNORED = ("word_counts", "word_docs", "index_docs", "document_count", "nb_words")


class Vocabulary:
    """Ids to words and words to ids, with the text-splitting rules of a Keras ``Tokenizer``.

    Build one with :func:`load_vocabulary`. Attributes are read-only by convention.

    Attributes:
        word_index: ``{word: id}`` used to turn text into ids (a Tokenizer's ``word_index``).
        index_word: ``{id: word}`` used to label ids (a Tokenizer's ``index_word``).
        num_words: ids ``>= num_words`` are not kept by :meth:`texts_to_sequences` (``None``/0: no cut-off).
        oov_token: the word unknown words become, or ``None`` (unknown words are dropped).
        lower: lowercase texts first.
        split: the separator words are split on.
        filters: characters replaced by ``split`` before splitting.
        char_level: every character is a token (filters and split are not applied).
        kind: ``"tokenizer"``, ``"list"`` or ``"dict"``: what it was made from.
        source: where it came from, for messages (a file name, or a description).
    """

    def __init__(
        self,
        word_index: Mapping[str, int],
        index_word: Mapping[int, str] | None = None,
        *,
        num_words: int | None = None,
        oov_token: str | None = None,
        lower: bool = True,
        split: str = " ",
        filters: str = KERAS_FILTERS,
        char_level: bool = False,
        kind: str = "dict",
        source: str = "a vocabulary",
    ) -> None:
        self.source = source
        self.kind = kind
        self.word_index: dict[str, int] = {
            _word(w, source, "word_index"): _id(i, source, w) for w, i in word_index.items()
        }
        if index_word is None:
            index_word = {}
            for w, i in self.word_index.items():
                index_word.setdefault(i, w)  # the first word of an id labels it
        self.index_word: dict[int, str] = {
            _id(i, source, w): _word(w, source, "index_word") for i, w in index_word.items()
        }
        if num_words is not None and (isinstance(num_words, bool) or not isinstance(num_words, int) or num_words < 0):
            raise InputError(f"{source}: num_words must be a non-negative int or None. Received {num_words!r}.")
        if oov_token is not None and not isinstance(oov_token, str):
            raise InputError(f"{source}: oov_token must be a string or None. Received {oov_token!r}.")
        for name, value in (("lower", lower), ("char_level", char_level)):
            if not isinstance(value, bool):
                raise InputError(f"{source}: {name} must be true or false. Received {value!r}.")
        if not isinstance(split, str) or not split:
            raise InputError(f"{source}: split must be a non-empty string. Received {split!r}.")
        if isinstance(filters, (list, tuple)) and all(isinstance(c, str) for c in filters):
            filters = "".join(filters)
        if not isinstance(filters, str):
            raise InputError(f"{source}: filters must be a string of characters. Received {filters!r}.")
        self.num_words = num_words
        self.oov_token = oov_token
        self.lower = lower
        self.split = split
        self.filters = filters
        self.char_level = char_level
        self._filter_table = str.maketrans({c: split for c in filters})

    def __len__(self) -> int:
        """The number of ids from 0 to the largest id with a word (the embedding size the ids need)."""
        return max(self.index_word, default=-1) + 1

    def __contains__(self, word: object) -> bool:
        return word in self.word_index

    def __repr__(self) -> str:
        return (
            f"Vocabulary(kind={self.kind!r}, size={len(self)}, num_words={self.num_words!r}, "
            f"oov_token={self.oov_token!r}, source={self.source!r})"
        )

    # ------------------------------------------------------------------------------------------ ids -> words
    def token(self, i: int) -> str:
        """The word of id ``i``.

        Id 0 without a non-empty word is ``"<pad>"``; an id without a word is the OOV token when the
        vocabulary has one, else ``"<unk>"``. Ids at or above ``num_words`` keep their word (a label, not
        an encoding).

        Raises:
            InputError: ``i`` is not an integer.
        """
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise InputError(f"Token ids must be integers. Received {i!r} ({type(i).__name__}).")
        word = self.index_word.get(int(i))
        if word:
            return word
        if int(i) == 0:
            return PAD_TOKEN
        if word is not None:
            return word
        return self.oov_token if self.oov_token is not None else UNK_TOKEN

    def tokens(self, ids: Any) -> list[Any]:
        """The words of an array of ids (a list, numpy array or tensor), nested like the input.

        Returns:
            ``list[str]`` for 1-D ids, a list of such lists for 2-D ids, and so on.

        Raises:
            InputError: the ids are not integers, or are a scalar.
        """
        if hasattr(ids, "detach"):  # a torch tensor
            ids = ids.detach().to("cpu").numpy()
        array = np.asarray(ids)
        if array.ndim == 0:
            raise InputError(f"tokens() takes an array of ids; for one id use token(). Received {ids!r}.")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"Token ids must be integers. Received an array of dtype {array.dtype}.")
        return _nested_tokens(array.tolist(), self.token)

    # ------------------------------------------------------------------------------------------ texts -> ids
    def texts_to_sequences(self, texts: Iterable[str | Sequence[str]]) -> list[list[int]]:
        """Each text as a list of ids, exactly as ``Tokenizer.texts_to_sequences`` gives them.

        Args:
            texts: strings, or lists of tokens (each token used as is, lowercased when ``lower``).

        Raises:
            InputError: ``texts`` is a single string or holds something other than strings and token
                lists, or an unknown word meets an OOV token missing from ``word_index``.
        """
        return [self._sequence(text, n) for n, text in enumerate(_texts(texts))]

    def texts_to_ids(
        self,
        texts: Iterable[str | Sequence[str]],
        maxlen: int | None = None,
        padding: str = "pre",
        truncating: str = "pre",
        value: float = 0,
        dtype: Any = "int32",
    ) -> np.ndarray:
        """Texts as one padded id array: ``texts_to_sequences`` then ``pad_sequences``, as tf_keras does them.

        Args:
            texts: strings (or lists of tokens), one per sample.
            maxlen: length of every row; ``None`` means the longest sequence.
            padding: ``"pre"`` (pad at the start, Keras' default) or ``"post"``.
            truncating: ``"pre"`` (drop the start of longer sequences) or ``"post"`` (drop the end).
            value: the padding value.
            dtype: the numpy dtype of the result.

        Returns:
            ``np.ndarray`` of shape ``(len(texts), maxlen)``.

        Raises:
            InputError: a bad argument, bad texts, or ids that do not fit ``dtype``.

        Example:
            >>> vocab.texts_to_ids(["the movie", "a great movie indeed"], maxlen=3, padding="post")
        """
        if padding not in ("pre", "post"):
            raise InputError(f'padding must be "pre" or "post". Received {padding!r}.')
        if truncating not in ("pre", "post"):
            raise InputError(f'truncating must be "pre" or "post". Received {truncating!r}.')
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)) or maxlen < 1):
            raise InputError(f"maxlen must be a positive int or None (the longest text). Received {maxlen!r}.")
        try:
            np_dtype = np.dtype(dtype)
        except TypeError as err:
            raise InputError(f"dtype {dtype!r} is not a numpy dtype: {err}") from err
        if np_dtype.kind not in "iuf":
            raise InputError(f"dtype must be an integer or float dtype. Received {np_dtype}.")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputError(f"value (the padding value) must be a number. Received {value!r}.")
        sequences = self.texts_to_sequences(texts)
        width = int(maxlen) if maxlen is not None else max((len(s) for s in sequences), default=0)
        try:
            out = np.full((len(sequences), width), value, dtype=np_dtype)  # (N, maxlen)
            for row, seq in enumerate(sequences):
                if not seq:
                    continue
                kept = np.asarray(seq[-width:] if truncating == "pre" else seq[:width], dtype=np_dtype)  # (<= maxlen,)
                if padding == "post":
                    out[row, : len(kept)] = kept
                else:
                    out[row, -len(kept) :] = kept
        except (OverflowError, ValueError) as err:
            raise InputError(f"Ids or the padding value {value!r} do not fit dtype {np_dtype}: {err}") from err
        return out

    def _words(self, text: str | Sequence[str], n: int) -> Sequence[str]:
        if isinstance(text, str):
            if self.char_level:
                return text.lower() if self.lower else text
            if self.lower:
                text = text.lower()
            return [w for w in text.translate(self._filter_table).split(self.split) if w]
        if isinstance(text, (list, tuple)) and all(isinstance(w, str) for w in text):
            return [w.lower() for w in text] if self.lower else list(text)
        raise InputError(
            f"Text {n} is {type(text).__name__} {_short(text)}. Expected a string or a list of string tokens."
        )

    def _sequence(self, text: str | Sequence[str], n: int) -> list[int]:
        oov_index = self.word_index.get(self.oov_token) if self.oov_token is not None else None
        ids: list[int] = []
        for word in self._words(text, n):
            i = self.word_index.get(word)
            if i is not None:
                if self.num_words and i >= self.num_words:
                    if oov_index is not None:
                        ids.append(oov_index)
                else:
                    ids.append(i)
            elif self.oov_token is not None:
                if oov_index is None:
                    raise InputError(
                        f"{self.source}: word {word!r} of text {n} is unknown and the OOV token "
                        f"{self.oov_token!r} has no id in word_index. Fix: fit the tokenizer with oov_token set "
                        "before fitting, so the OOV token gets id 1."
                    )
                ids.append(oov_index)
        return ids


# ---------------------------------------------------------------------------------------------- loading
def load_vocabulary(source: Any) -> Vocabulary:
    """Reads a vocabulary from a Keras Tokenizer's JSON, a word list, or a ``{word: id}`` dict.

    Args:
        source: one of

            * a ``Vocabulary`` (returned as is);
            * a string holding JSON (its first non-space character is ``{`` or ``[``):
              ``tokenizer.to_json()``, a ``{word: id}`` object or a list of words;
            * a path (``str`` or ``os.PathLike``) to such a JSON file (suffix ``.json``, or content starting
              with ``{``), or to a word list: UTF-8 text, one word per line, the first line is id 0 (the
              padding entry, usually empty) and line ``k`` (counting from 0) is id ``k``;
            * a list/tuple of words (index = id), e.g. ``TextVectorization.get_vocabulary()``;
            * a ``{word: id}`` dict, e.g. ``tokenizer.word_index``, or a Tokenizer's parsed JSON / config dict;
            * a Keras ``Tokenizer`` (read through its ``to_json()``) or a layer with ``get_vocabulary()``.

    Returns:
        The :class:`Vocabulary`.

    Raises:
        InputError: the source is of no accepted kind, a file is missing, not a regular file, larger
            than ``MAX_VOCABULARY_BYTES`` or not UTF-8, the JSON is malformed, or words and ids have the
            wrong types.

    Example:
        >>> vocab = load_vocabulary(tokenizer.to_json())
        >>> vocab = load_vocabulary("words.txt")
    """
    if isinstance(source, Vocabulary):
        return source
    if isinstance(source, str) and source.lstrip()[:1] in ("{", "["):
        if len(source) > MAX_VOCABULARY_BYTES:
            raise InputError(
                f"Vocabulary JSON text has {len(source)} characters. Expected at most {MAX_VOCABULARY_BYTES}."
            )
        return _from_json(_parse_json(source, "vocabulary JSON text"), "vocabulary JSON text")
    if isinstance(source, (str, os.PathLike)):
        return _from_file(Path(source))
    if isinstance(source, Mapping):
        return _from_mapping(source, "vocabulary dict")
    if isinstance(source, np.ndarray) and source.ndim == 1:
        source = source.tolist()
    if isinstance(source, (list, tuple)):
        return _from_list(source, "vocabulary list")
    if callable(getattr(source, "get_vocabulary", None)):
        return _from_list(list(source.get_vocabulary()), f"{type(source).__name__}.get_vocabulary()")
    if callable(getattr(source, "to_json", None)) and hasattr(source, "word_index"):
        if getattr(source, "analyzer", None) is not None:
            raise InputError(
                f"{type(source).__name__} has a custom analyzer, which cannot be reproduced. Fix: tokenize the "
                "texts with it yourself and pass token lists to texts_to_ids."
            )
        return _from_json(_parse_json(source.to_json(), "Tokenizer.to_json()"), "Tokenizer.to_json()")
    raise InputError(
        f"Cannot read a vocabulary from {type(source).__name__} {_short(source)}. Expected a Tokenizer JSON string "
        "or file, a word list file, a list of words, or a {word: id} dict."
    )


def text_layer_vocabulary(layer: Any) -> Vocabulary:
    """The ids of a ``TextVectorization`` or ``StringLookup`` module as words, listed as Keras'
    ``get_vocabulary()`` lists them: the mask token (id 0, shown ``"<pad>"`` when empty), the OOV ids
    (``"[UNK]"``), then the vocabulary."""
    cfg = layer.config
    words = [cfg.mask_token] if cfg.mask_token is not None else []
    words += [KERAS_OOV] * int(cfg.num_oov_indices) + list(cfg.vocabulary)
    return _from_list(words, f"the vocabulary of {layer.describe()}")


def _text_layer(model: Any, name: str) -> Any:
    """The ``TextVectorization``/``StringLookup`` module that reads model input ``name`` (else the first one)."""
    from ..layers.text import StringLookup, TextVectorization

    kinds = (TextVectorization, StringLookup)
    for node in getattr(model, "_nodes", ()):
        module = model.layer(node.layer)
        if isinstance(module, kinds) and node.inputs and node.inputs[0][0] == name:
            return module
    return next((module for _, module in model.iter_layers() if isinstance(module, kinds)), None)


def text_layer_ids(model: Any, inputs: Sequence[Any]) -> tuple[int, Any, Vocabulary] | None:
    """The token ids a text model's own text layer makes of one batch, and that layer's vocabulary.

    Args:
        model: a converted model.
        inputs: one batch of its inputs in Keras input order (texts as lists or object arrays of str).

    Returns:
        ``(position, ids, vocabulary)``: the position of the model's first string input, the ids its
        ``TextVectorization``/``StringLookup`` layer gives (an int64 CPU tensor, ``(batch, steps)`` for a
        splitting ``TextVectorization``), and the words of those ids; ``None`` for a model without a
        string input or without a text layer.
    """
    import torch

    from ..extract.sources import text_input_names

    names = text_input_names(model)
    if not names:
        return None
    layer = _text_layer(model, names[0])
    if layer is None:
        return None
    position = model.input_names.index(names[0])
    texts = model._prepare_text(model.input_specs[position], inputs[position])  # as the model reshapes them
    with torch.no_grad():
        ids = layer(texts).detach().to("cpu")
    return position, ids, text_layer_vocabulary(layer)


def text_tokens(model: Any, texts: Any) -> list[Any]:
    """The tokens a one-text-input model's own text layer makes of ``texts``: one list per text, one word per
    step, padding as ``"<pad>"`` and unknown words as ``"[UNK]"``. These label the steps of the model's gates,
    e.g. ``plots.heatmap(acts["lstm/gates/c"][0], tokens=text_tokens(model, texts)[0])``.

    Raises:
        InputError: the model has no string input or no ``TextVectorization``/``StringLookup`` layer, or
            ``texts`` are not strings.
    """
    if len(model.input_names) != 1:
        raise InputError(
            f"text_tokens takes the texts of a one-input model; model {model.name!r} takes {model.input_names}."
        )
    found = text_layer_ids(model, [texts])
    if found is None:
        raise InputError(
            f"Model {model.name!r} has no string input read by a TextVectorization or StringLookup layer, so it "
            "makes no tokens of texts. Fix: label token ids with load_vocabulary(...).tokens(ids)."
        )
    _, ids, vocabulary = found
    return vocabulary.tokens(ids)


def read_text_lines(path: str | os.PathLike[str], max_bytes: int = MAX_VOCABULARY_BYTES) -> list[str]:
    """The lines of a UTF-8 text file (one text per line, ``\\r\\n`` or ``\\n``), for :meth:`Vocabulary.texts_to_ids`.

    Lines are split on ``\\n`` only (a text may hold other line-break characters); a final newline
    ends the last line rather than adding an empty one.

    Raises:
        InputError: the file is missing, not a regular file, larger than ``max_bytes`` or not UTF-8.
    """
    return _lines(_read_bounded(Path(path), max_bytes), Path(path))


def _read_bounded(path: Path, limit: int) -> str:
    """A regular file's text (UTF-8, a BOM dropped), refused beyond ``limit`` bytes; never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as err:
        raise InputError(f"Vocabulary or text file {path} does not exist.") from err
    except OSError as err:
        raise InputError(f"{path} cannot be opened: {err}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path} is not a regular file. Expected a UTF-8 text or JSON file.")
        if info.st_size > limit:
            raise InputError(f"{path} has {info.st_size} bytes. Expected at most {limit} bytes.")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise InputError(f"{path} grew past {limit} bytes while being read. Expected at most {limit} bytes.")
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text: {err}. Fix: save it as UTF-8.") from err


def _lines(text: str, path: Path) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _from_file(path: Path) -> Vocabulary:
    text = _read_bounded(path, MAX_VOCABULARY_BYTES)
    if path.suffix.lower() == ".json" or text.lstrip()[:1] == "{":
        return _from_json(_parse_json(text, str(path)), str(path))
    words = _lines(text, path)
    if not words:
        raise InputError(f"Word list {path} is empty. Expected one word per line, the first line being id 0.")
    return _from_list(words, str(path))


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{where} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}. Expected "
            "tokenizer.to_json(), a {word: id} object or a list of words."
        ) from err
    except RecursionError as err:
        raise InputError(f"{where} nests JSON too deeply. Expected a tokenizer JSON, an object or a list.") from err


def _from_json(obj: Any, where: str) -> Vocabulary:
    if isinstance(obj, list):
        return _from_list(obj, where)
    if isinstance(obj, dict):
        return _from_mapping(obj, where)
    raise InputError(
        f"{where} holds a JSON {type(obj).__name__}. Expected tokenizer.to_json(), a {{word: id}} object or a list."
    )


def _from_mapping(obj: Mapping[Any, Any], where: str) -> Vocabulary:
    if isinstance(obj.get("config"), Mapping) and ("class_name" in obj or "word_index" in obj["config"]):
        if obj.get("class_name", "Tokenizer") != "Tokenizer":
            raise InputError(
                f"{where} holds a Keras {obj.get('class_name')!r} config. Expected a Tokenizer's to_json(), a "
                "word list or a {word: id} dict."
            )
        return _from_tokenizer_config(obj["config"], where)
    if "word_index" in obj and not isinstance(obj["word_index"], (int, np.integer)):
        return _from_tokenizer_config(obj, where)
    kind = "dict"
    oov = KERAS_OOV if KERAS_OOV in obj else None
    return Vocabulary(obj, oov_token=oov, kind=kind, source=where)


def _from_tokenizer_config(config: Mapping[str, Any], where: str) -> Vocabulary:
    unknown = sorted(str(k) for k in config if k not in _TOKENIZER_KEYS and k not in _TOKENIZER_IGNORED)
    if unknown:
        raise InputError(
            f"{where}: Tokenizer config has unknown keys {unknown}. Expected keys among "
            f"{', '.join(_TOKENIZER_KEYS + _TOKENIZER_IGNORED)} (what tf_keras Tokenizer.to_json() writes)."
        )
    if "word_index" not in config:
        raise InputError(
            f"{where}: Tokenizer config has no 'word_index'. Expected tokenizer.to_json() of a fitted tokenizer."
        )
    word_index = _json_field(config["word_index"], where, "word_index")
    index_word = config.get("index_word")
    if index_word is not None:
        raw = _json_field(index_word, where, "index_word")
        index_word = {}
        for key, word in raw.items():
            try:
                index_word[int(key)] = word
            except (TypeError, ValueError) as err:
                raise InputError(f"{where}: index_word key {key!r} is not an integer id.") from err
    num_words = config.get("num_words", config.get("nb_words"))
    return Vocabulary(
        word_index,
        index_word,
        num_words=num_words,
        oov_token=config.get("oov_token"),
        lower=config.get("lower", True),
        split=config.get("split", " "),
        filters=config.get("filters", KERAS_FILTERS),
        char_level=config.get("char_level", False),
        kind="tokenizer",
        source=where,
    )


def _json_field(value: Any, where: str, name: str) -> dict[Any, Any]:
    """A Tokenizer config field that holds a dict, serialised as a JSON string by Keras (or already a dict)."""
    if isinstance(value, str):
        value = _parse_json(value, f"{where} ({name})")
    if not isinstance(value, dict):
        raise InputError(f"{where}: Tokenizer {name} is a {type(value).__name__}. Expected a JSON object.")
    return value


def _from_list(words: Sequence[Any], where: str) -> Vocabulary:
    decoded = [w.decode("utf-8") if isinstance(w, bytes) else w for w in words]
    for k, w in enumerate(decoded):
        if not isinstance(w, str):
            raise InputError(
                f"{where}: entry {k} is {type(w).__name__} {_short(w)}. Expected a string (the word of id {k})."
            )
    word_index: dict[str, int] = {}
    for k, w in enumerate(decoded):
        if w:
            word_index.setdefault(w, k)
    oov = KERAS_OOV if KERAS_OOV in word_index else None
    return Vocabulary(word_index, dict(enumerate(decoded)), oov_token=oov, kind="list", source=where)


def _word(word: Any, where: str, field: str) -> str:
    if not isinstance(word, str):
        raise InputError(f"{where}: {field} holds the word {_short(word)} ({type(word).__name__}). Expected strings.")
    return word


def _id(i: Any, where: str, word: Any) -> int:
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) or i < 0:
        raise InputError(f"{where}: the id of word {_short(word)} is {i!r}. Expected a non-negative int.")
    return int(i)


def _texts(texts: Any) -> list[Any]:
    if isinstance(texts, (str, bytes)):
        raise InputError(f"texts must be a list of texts, not one {type(texts).__name__}. Fix: pass [text].")
    if isinstance(texts, np.ndarray):
        return texts.tolist()
    try:
        return list(texts)
    except TypeError as err:
        raise InputError(f"texts must be an iterable of strings. Received {type(texts).__name__}.") from err


def _nested_tokens(ids: Any, label: Any) -> list[Any]:
    return [_nested_tokens(i, label) if isinstance(i, list) else label(i) for i in ids]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
