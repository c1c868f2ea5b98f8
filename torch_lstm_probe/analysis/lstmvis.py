"""LSTMVis export: a dataset's recurrent states and gates, streamed into the files the LSTMVis server reads.

LSTMVis (Strobelt et al., "LSTMVis: A Tool for Visual Analysis of Hidden State Dynamics in Recurrent
Neural Networks") reads one project folder holding ``lstm.yml`` and the files it names. We write:

* ``states.h5``: one float32 dataset ``(tokens, units)`` per exported key, at the HDF5 path of its probe
  key (``lstm/gates/c``, ``bi/backward/gates/h``, ...): the valid tokens of every sample, in data order,
  each sample's tokens in input order;
* ``train.h5``: ``word_ids``, int64 ``(tokens,)``, the input id of each of those tokens, and
  ``sample_offsets``, int64 ``(samples + 1,)``: sample ``i``'s tokens are rows ``offsets[i]:offsets[i + 1]``;
* ``words.dict``: one ``word id`` line per id of the vocabulary and of the data (the id itself is the word
  without a vocabulary); whitespace inside a word is escaped (``_`` for a space, ``\\t``, ``\\n``, ...)
  because LSTMVis splits lines on whitespace;
* ``lstm.yml``: name, description, files, word_sequence and one ``states.types`` entry per key, with
  ``layer`` (1, 2, ... in graph order), ``type`` (``state`` for c, ``output`` for h, ``gate f`` ...,
  prefixed ``forward``/``backward`` for Bidirectional halves), ``unsigned: true`` and ``transform: none``
  for sigmoid gates, ``transform: none`` for values a bounded activation keeps in [-1, 1], and LSTMVis'
  default ``tanh`` squashing for the rest (the LSTM cell state).

Tokens are the ids of the model's first integer ``(batch, time)`` input; for a model that takes strings,
the ids its own ``TextVectorization``/``StringLookup`` layer makes of them, labelled with that layer's
vocabulary unless ``vocab`` is given. A token is valid where the
recurrent layers applied their mask (``"<layer>/mask"``; every step when no exported layer is masked),
so padding is left out and the rows of every states dataset line up with ``word_ids``. Gates come in
processing order (as ``tlp.probe`` gives them); for ``go_backwards`` layers and the backward half of a Bidirectional layer
the time axis is flipped back to input order before the valid steps are taken, so row ``r`` of every
dataset belongs to word ``r``.

Values are written as they come, one batch at a time, into chunked, resizable HDF5 datasets: memory
holds one batch, whatever the dataset size. The HDF5 files are written under temporary names and renamed
when complete, and ``lstm.yml`` (the file LSTMVis looks for) is written last, so a failed run never leaves
a project LSTMVis would open. Runs in one process (under ``torchrun``, call it on one rank).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..capture.keys import key_meaning, matches, split_key
from ..capture.plan import gate_modules, plan_capture, run_plan
from ..errors import InputError
from ..extract.run import _progress, _refuse_stateful, layout_of
from ..extract.shards import fsync_dir
from ..extract.sources import as_source, positive_int, text_input_names, to_device
from ..model import KerasModel
from .vocab import Vocabulary, load_vocabulary, text_layer_ids

__all__ = ["export_lstmvis", "LSTMVisExport", "STATE_NAMES", "GATE_NAMES"]

STATE_NAMES = ("c", "h")  # cell state (LSTM) and hidden state (every cell)
GATE_NAMES = ("i", "f", "g", "o", "z", "r", "n")  # LSTM i f g o, GRU z r n
STATES_FILE, WORDS_FILE, DICT_FILE, CONFIG_FILE = "states.h5", "train.h5", "words.dict", "lstm.yml"
WORD_IDS_PATH, OFFSETS_PATH = "word_ids", "sample_offsets"
_SIGMOID = {"LSTM": ("i", "f", "o"), "GRU": ("z", "r")}
_BOUNDED_ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "softsign", "hard_tanh")
_CHUNK_BYTES = 1 << 18  # HDF5 chunk size aimed at


@dataclass(frozen=True)
class LSTMVisExport:
    """What :func:`export_lstmvis` wrote.

    Attributes:
        out_dir: the project folder.
        config: ``lstm.yml``.
        states_file: ``states.h5``.
        words_file: ``train.h5`` (``word_ids`` and ``sample_offsets``).
        dict_file: ``words.dict``.
        keys: the exported probe keys, in order; each is also its dataset path in ``states.h5``.
        num_samples: samples read.
        num_tokens: valid tokens written (rows of every dataset).
    """

    out_dir: Path
    config: Path
    states_file: Path
    words_file: Path
    dict_file: Path
    keys: tuple[str, ...]
    num_samples: int
    num_tokens: int


@dataclass(frozen=True)
class _Key:
    key: str  # probe key, also the dataset path
    layer: str  # layer path[@n] without the half
    half: str  # "", "forward" or "backward"
    gate: str  # c h i f g o z r n
    cell: str | None  # LSTM / GRU / SimpleRNN
    activation: str | None
    flip: bool  # processing order reversed against the input
    mask_key: str | None  # the probe key of the applied mask


def export_lstmvis(
    model: KerasModel,
    data: Any,
    out_dir: str | os.PathLike[str],
    vocab: Any = None,
    layers: Sequence[str] | str | None = None,
    states: Sequence[str] | str = ("c", "h"),
    gates: Sequence[str] | str = (),
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> LSTMVisExport:
    """Writes an LSTMVis project folder: states and gates of the recurrent layers over a whole dataset.

    Args:
        model: a converted model with an integer token input, or with a string input read by a text layer
            (stateful layers are refused).
        data: anything :func:`torch_lstm_probe.extract` takes (arrays, a list or dict of them,
            ``.npy``/``.npz``/``.safetensors`` paths, torch datasets and loaders; texts for a text model).
        out_dir: the project folder (created; our four files in it are replaced).
        vocab: labels for the ids in ``words.dict``: anything :func:`load_vocabulary` takes, or ``None``
            (each id is its own label; a text model's ids get the words of its text layer).
        layers: recurrent layer names (or probe keys); ``None`` means every recurrent layer.
        states: among ``c`` (LSTM cell state) and ``h`` (hidden state, every cell); a list or ``"c,h"``.
        gates: among ``i f g o`` (LSTM) and ``z r n`` (GRU); a list or ``"f,i"``.
        batch_size: samples per forward pass.
        device: where to run (default: the model's device); the model is moved there.
        progress: a progress meter on stderr when it is a terminal.

    Returns:
        :class:`LSTMVisExport`: the files written and the token count.

    Raises:
        InputError: bad arguments or data, no integer token input, no recurrent layer among ``layers``, a
            requested state or gate that none of them has, a layer whose time axis is not the token
            input's, or layers that mask different steps.
        ProbeKeyError: a requested name matches no layer.

    Example:
        >>> tlp.export_lstmvis(model, "ids.npy", "lstmvis/sentiment", vocab="tokenizer.json", gates="f,i")
        >>> # then: python lstm_server.py -dir lstmvis
    """
    import h5py

    wanted_states = _names(states, STATE_NAMES, "states")
    wanted_gates = _names(gates, GATE_NAMES, "gates")
    wanted = wanted_states + wanted_gates
    if not wanted:
        raise InputError("Nothing to export: states and gates are both empty. Expected e.g. states=('c', 'h').")
    positive_int("batch_size", batch_size)
    vocabulary = load_vocabulary(vocab) if vocab is not None else None
    _refuse_stateful(model)
    if device is not None:
        model.to(device)
    model.eval()
    run_device = model._device_dtype()[0]
    recurrent = [path for path, module in model.iter_layers() if gate_modules(module)]
    if not recurrent:
        raise InputError(f"Model {model.name!r} has no LSTM, GRU or SimpleRNN layer: nothing for LSTMVis to show.")
    requests = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else recurrent)
    plan = plan_capture(model, requests, gates=True, masks=True)
    text = bool(text_input_names(model))
    source = as_source(data, model.input_names, batch_size, text_inputs=text_input_names(model))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = {name: out / name for name in (STATES_FILE, WORDS_FILE, DICT_FILE, CONFIG_FILE)}
    temp = {name: out / f".{name}.tmp" for name in (STATES_FILE, WORDS_FILE, DICT_FILE, CONFIG_FILE)}
    final[CONFIG_FILE].unlink(missing_ok=True)  # no stale project while the new files are written

    keys: list[_Key] = []
    token_input = -1
    num_samples = num_tokens = 0
    seen: set[int] = set()
    meter = _progress(source.num_samples, progress)
    try:
        with h5py.File(temp[STATES_FILE], "w") as states_h5, h5py.File(temp[WORDS_FILE], "w") as words_h5:
            word_ids = words_h5.create_dataset(
                WORD_IDS_PATH, shape=(0,), maxshape=(None,), dtype="int64", chunks=(_CHUNK_BYTES // 8,)
            )
            offsets = words_h5.create_dataset(
                OFFSETS_PATH, shape=(1,), maxshape=(None,), dtype="int64", chunks=(_CHUNK_BYTES // 8,)
            )
            offsets[0] = 0
            for batch in source.batches():
                host = batch.inputs or []  # CPU tensors (object arrays of str for texts) in Keras input order
                inputs = [to_device(x, run_device, non_blocking=True) for x in host]
                first = not keys
                if first:
                    token_input = -1 if text else _token_input(host, model)
                    keys = _plan_keys(model, plan, inputs, requests, wanted, layers)
                values = run_plan(model, plan, inputs)
                if first:
                    for k in keys:
                        _create_states(states_h5, k, int(values[k.key].shape[-1]))
                if text:
                    tokens, layer_vocabulary = _text_ids(model, host)  # (n, T) ids of the model's text layer
                    vocabulary = vocabulary if vocab is not None else layer_vocabulary
                else:
                    tokens = host[token_input]  # (n, T) integer ids, CPU
                valid = _valid_steps(values, keys, tokens.shape)  # (n, T) bool, input order
                ids = tokens[valid].to(torch.int64)  # (k,) valid ids, sample by sample
                _append(word_ids, ids.numpy())
                lengths = valid.sum(dim=1).to(torch.int64)  # (n,)
                _append(offsets, (num_tokens + torch.cumsum(lengths, 0)).numpy())
                for k in keys:
                    v = values[k.key]  # (n, T, units), processing order
                    if k.flip:
                        v = v.flip(1)  # (n, T, units), input order
                    _append(states_h5[k.key], v[valid.to(v.device)].to("cpu", torch.float32).numpy())  # (k, units)
                seen.update(torch.unique(ids).tolist())
                num_samples += batch.size
                num_tokens += int(ids.numel())
                if meter is not None:
                    meter.update(batch.size)
        if not keys:
            raise InputError("The data holds no samples. Expected at least one.")
        _write_text(temp[DICT_FILE], _dictionary(vocabulary, seen))
        for name in (STATES_FILE, WORDS_FILE, DICT_FILE):
            os.replace(temp[name], final[name])
        config = _config(model, keys, num_samples, num_tokens)
        _write_text(temp[CONFIG_FILE], config)
        os.replace(temp[CONFIG_FILE], final[CONFIG_FILE])
        fsync_dir(out)
    finally:
        if meter is not None:
            meter.close()
        for path in temp.values():
            path.unlink(missing_ok=True)
    return LSTMVisExport(
        out,
        final[CONFIG_FILE],
        final[STATES_FILE],
        final[WORDS_FILE],
        final[DICT_FILE],
        tuple(k.key for k in keys),
        num_samples,
        num_tokens,
    )


# ---------------------------------------------------------------------------------------------- planning
def _names(value: Sequence[str] | str, allowed: tuple[str, ...], what: str) -> list[str]:
    """State or gate names from a list or a comma-separated string, checked against ``allowed``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        name = item.strip() if isinstance(item, str) else item
        if name == "":
            continue
        if name not in allowed:
            raise InputError(f"{what} names {name!r}. Expected some of {', '.join(allowed)}.")
        if name not in names:
            names.append(name)
    return names


def _token_input(inputs: Sequence[torch.Tensor], model: KerasModel) -> int:
    """The position of the first integer ``(batch, time)`` input: the token ids LSTMVis shows."""
    for n, x in enumerate(inputs):
        if x.dim() == 2 and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool:
            return n
    shown = ", ".join(f"{name} {tuple(x.shape)} {x.dtype}" for name, x in zip(model.input_names, inputs))
    raise InputError(
        f"Model {model.name!r} has no integer (batch, time) token input (inputs: {shown}). LSTMVis shows "
        "states over words, so it needs token ids. Fix: export a model that takes padded id arrays."
    )


def _text_ids(model: KerasModel, host: Sequence[Any]) -> tuple[torch.Tensor, Vocabulary]:
    """The ``(n, T)`` ids a text model's own text layer makes of one batch, and that layer's vocabulary."""
    found = text_layer_ids(model, host)
    if found is None or found[1].dim() != 2:
        raise InputError(
            f"Model {model.name!r} takes strings, but no TextVectorization or StringLookup layer turns them into "
            "(batch, time) token ids. LSTMVis shows states over words, so it needs token ids."
        )
    return found[1], found[2]


def _plan_keys(
    model: KerasModel,
    plan: Any,
    inputs: Sequence[torch.Tensor],
    requests: Sequence[str],
    wanted: Sequence[str],
    layers: Any,
) -> list[_Key]:
    """The keys to export, with each one's cell, flip and mask (from the extraction layout).

    Ordered by layer (and Bidirectional half) in graph order, then in the order states and gates were asked for.
    """
    layout = layout_of(model, plan, inputs, None, False, True)
    keys: list[_Key] = []
    gate_keys: list[str] = []
    for spec in layout.keys:
        path, sub = split_key(spec.key)
        if "/gates/" not in sub:
            continue
        gate_keys.append(spec.key)
        half = sub.split("/")[1] if sub.startswith(("/forward/", "/backward/")) else ""
        gate = sub.rsplit("/", 1)[1]
        if gate not in wanted or not plan.selected(spec.key):
            continue
        mask_key = layout.mask_keys.get(spec.mask) if spec.mask is not None else None
        keys.append(_Key(spec.key, path, half, gate, spec.cell, spec.activation, spec.flip, mask_key))
    if layers is not None:
        recurrent = sorted({split_key(key)[0] for key in gate_keys})
        for request in requests:
            if not any(matches(key, request) for key in gate_keys):
                raise InputError(
                    f"Layer {request!r} of model {model.name!r} is not a recurrent layer: it has no states or gates. "
                    f"Recurrent layers: {', '.join(recurrent) or '(none)'}."
                )
    found = {k.gate for k in keys}
    missing = [name for name in wanted if name not in found]
    if missing:
        cells = sorted({spec.cell or "?" for spec in layout.keys if spec.cell})
        raise InputError(
            f"No layer among {', '.join(requests)} has {', '.join(missing)} (their cells: {', '.join(cells)}). "
            "Expected: LSTM c h i f g o, GRU h z r n, SimpleRNN h."
        )
    groups: dict[tuple[str, str], int] = {}
    for k in keys:
        groups.setdefault((k.layer, k.half), len(groups))
    return sorted(keys, key=lambda k: (groups[(k.layer, k.half)], list(wanted).index(k.gate)))


def _valid_steps(values: dict[str, torch.Tensor], keys: Sequence[_Key], shape: torch.Size) -> torch.Tensor:
    """The ``(n, T)`` bool steps every exported layer keeps: their common applied mask, or every step."""
    valid: torch.Tensor | None = None
    owner = ""
    for k in keys:
        steps = values[k.key].shape[1]
        if steps != shape[1]:
            raise InputError(
                f"{k.key} has {steps} time steps but the token input has {shape[1]}: its steps do not line up "
                "with the tokens. Fix: export only layers that run over the token sequence (layers=[...])."
            )
        if k.mask_key is None or k.mask_key not in values:
            continue
        mask = values[k.mask_key].to("cpu", torch.bool)  # (n, T), input order
        if valid is None:
            valid, owner = mask, k.mask_key
        elif not torch.equal(valid, mask):
            raise InputError(
                f"{owner} and {k.mask_key} mask different steps, so their tokens cannot share one word sequence. "
                "Fix: export them separately (layers=[...])."
            )
    return valid if valid is not None else torch.ones(tuple(shape), dtype=torch.bool)


# ---------------------------------------------------------------------------------------------- writing
def _create_states(h5: Any, k: _Key, units: int) -> None:
    """An empty, resizable float32 ``(0, units)`` dataset at the key's path, chunked by rows."""
    rows = max(1, min(16384, _CHUNK_BYTES // (4 * units)))
    dataset = h5.create_dataset(k.key, shape=(0, units), maxshape=(None, units), dtype="float32", chunks=(rows, units))
    dataset.attrs["key"] = k.key
    dataset.attrs["cell"] = k.cell or ""
    dataset.attrs["gate"] = k.gate
    dataset.attrs["meaning"] = key_meaning(k.key, k.cell).replace("processing order", "valid tokens in input order")
    dataset.attrs["flipped"] = k.flip  # processing order was reversed; rows are in input order


def _append(dataset: Any, rows: np.ndarray) -> None:
    """Appends ``rows`` along the first axis of a resizable dataset (created on first use for states)."""
    if rows.shape[0] == 0:
        return
    old = dataset.shape[0]
    dataset.resize(old + rows.shape[0], axis=0)
    dataset[old:] = rows


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _dict_word(word: str) -> str:
    """A word as LSTMVis' dictionary reader keeps it: one whitespace-free field (a lone space is allowed)."""
    if word == "":
        return "<empty>"
    if word == " " or word.split() == [word]:
        return word
    out = []
    for ch in word:
        if ch == " ":
            out.append("_")
        elif ch in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        elif ch.isspace() or ch.split() != [ch]:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _dictionary(vocab: Vocabulary | None, seen: set[int]) -> str:
    """``words.dict``: ``word id`` per line, for every id of the vocabulary and every id in the data."""
    ids = sorted(seen | set(vocab.index_word) if vocab is not None else seen)
    label = vocab.token if vocab is not None else str
    return "".join(f"{_dict_word(label(i))} {i}\n" for i in ids)


def _yaml_str(text: str) -> str:
    """A YAML double-quoted scalar (JSON escapes, with characters YAML forbids raw escaped too)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF or code in (0xFEFF, 0xFFFE, 0xFFFF):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _type_name(k: _Key) -> str:
    name = {"c": "state", "h": "output"}.get(k.gate, f"gate {k.gate}")
    return f"{k.half} {name}" if k.half else name


def _config(model: KerasModel, keys: Sequence[_Key], num_samples: int, num_tokens: int) -> str:
    """``lstm.yml`` in the layout LSTMVis reads (files, word_sequence, states.types), written by hand."""
    layer_numbers: dict[str, int] = {}
    for k in keys:
        layer_numbers.setdefault(k.layer, len(layer_numbers) + 1)
    description = (
        f"{model.name}: {', '.join(layer_numbers)} ({', '.join(dict.fromkeys(k.gate for k in keys))}) over "
        f"{num_samples} samples, {num_tokens} valid tokens"
    )
    lines = [
        "# LSTMVis project (https://github.com/HendrikStrobelt/LSTMVis), written by torch_lstm_probe.",
        "# Each states path is a probe key; rows are the valid tokens of every sample, in input order.",
        f"name: {_yaml_str(model.name)}",
        f"description: {_yaml_str(description)}",
        "",
        "files:",
        f"  states: {_yaml_str(STATES_FILE)}",
        f"  train: {_yaml_str(WORDS_FILE)}",
        f"  words: {_yaml_str(DICT_FILE)}",
        "",
        "word_sequence:",
        '  file: "train"',
        f"  path: {_yaml_str(WORD_IDS_PATH)}",
        '  dict_file: "words"',
        "",
        "states:",
        '  file: "states"',
        "  types:",
    ]
    for k in keys:
        sigmoid = k.gate in _SIGMOID.get(k.cell or "", ())
        bounded = sigmoid or (k.gate in ("g", "n", "h") and k.activation in _BOUNDED_ACTIVATIONS)
        lines += [
            f"    - type: {_yaml_str(_type_name(k))}",
            f"      layer: {layer_numbers[k.layer]}",
            f"      path: {_yaml_str(k.key)}",
            f"      unsigned: {'true' if sigmoid else 'false'}",
            f"      transform: {_yaml_str('none' if bounded else 'tanh')}",
        ]
    return "\n".join(lines) + "\n"
