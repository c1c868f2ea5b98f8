"""``verify``: every layer of a converted model against Keras (live, or a stored reference), one row each.

The reference is either Keras itself, run on the same inputs (Keras 3 for files a Keras 3
wrote, tf_keras for files of tf.keras, tf_keras and Keras 1/2), or a stored file of arrays in
the golden layout: ``input:<i>`` for the i-th model input and ``layer:<key>`` for the output
that :func:`tlp.probe <torch_lstm_probe.probe>` names ``<key>`` (``<layer>``, or ``<layer>:<k>``
for the k-th output of a layer with several). TensorFlow is imported only to run Keras live.

A layer is **within tolerance** when, for every output it has, the largest absolute error is at
most ``atol * max(1, m)``, where ``m`` is the largest ``|value|`` Keras gives for that output:
absolute below magnitude 1 (LSTM/GRU outputs), relative above it (a Dense or ReLU layer with
large values). The reported relative error is ``max |ours - keras| / m``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .errors import InputError, TorchLstmProbeError
from .model import KerasModel
from .probe import probe

__all__ = ["VerifyRow", "VerifyReport", "verify", "generate_inputs", "generate_texts", "format_report", "DEFAULT_ATOL"]

DEFAULT_ATOL = 1e-5  # float32 CPU, the suite's one tolerance
GENERATED_BATCH = 4  # rows of generated inputs
GENERATED_STEPS = 12  # time steps of generated inputs where the model leaves the time axis free
REFERENCE_SUFFIXES = (".npz", ".safetensors")
_GENERIC_WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "ran")  # words of a text input without a vocabulary
_UNKNOWN_WORD = "qzxvj"  # a word no vocabulary is expected to hold
_PUNCTUATION = (",", "!", "?", ".")
_RECURRENT_TYPES = ("LSTM", "GRU", "SimpleRNN", "Bidirectional")


class KerasUnavailableError(TorchLstmProbeError, RuntimeError):
    """Keras is needed for a live reference and cannot run here (not installed, or cannot load the model)."""


@dataclass
class VerifyRow:
    """One Keras layer: how far the converted model's outputs are from the reference."""

    name: str  # Keras layer name
    class_name: str  # Keras class (the runtime module type when the file's spec is unknown)
    keys: list[str] = field(default_factory=list)  # probe keys compared ("lstm", or "lstm:0", "lstm:1", ...)
    max_abs: float | None = None  # largest |ours - reference| over every compared output; None: not compared
    max_rel: float | None = None  # max_abs / the reference's largest |value| (per output, the largest)
    worst: tuple[int, ...] | None = None  # index of max_abs in its output
    worst_key: str | None = None  # the probe key of that output
    ok: bool | None = None  # within tolerance; None: not compared (see note)
    note: str | None = None  # why not compared, or a shape mismatch
    decisions: list[str] = field(default_factory=list)  # semantic decisions of the conversion, in words


@dataclass
class VerifyReport:
    """What :func:`verify` found: one row per Keras layer, in graph order."""

    source: str  # the model file (or what the model was converted from)
    writer: str  # the Keras generation that wrote it, e.g. "Keras 3.15.1", "tf_keras 2.21.0"
    reference: str  # what the outputs were compared with, in words
    inputs: list[str]  # each input: name, shape, dtype and where it came from
    atol: float
    rows: list[VerifyRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every compared layer is within tolerance (and at least one was compared)."""
        compared = [r for r in self.rows if r.ok is not None]
        return bool(compared) and all(r.ok for r in compared)

    @property
    def failed(self) -> list[VerifyRow]:
        return [r for r in self.rows if r.ok is False]


def verify(
    model_or_path: Any,
    x: Any = None,
    reference: Any = None,
    atol: float = DEFAULT_ATOL,
    *,
    weights: Any = None,
    custom_layers: Mapping[str, Any] | None = None,
) -> VerifyReport:
    """Compares every layer of the converted model with Keras, live or from a stored reference.

    Args:
        model_or_path: a Keras file (``.keras``, ``.h5``, architecture ``.json`` with
            ``weights=``), a model from :func:`tlp.load_keras`, or an in-memory ``keras.Model``
            (then it is its own live reference).
        x: inputs: one array, a list/tuple in Keras input order, or a dict by input name.
            ``None``: taken from ``reference`` when it holds ``input:<i>`` arrays, else generated
            from the model's input spec (:func:`generate_inputs`).
        reference: a ``.npz`` or ``.safetensors`` file, or a mapping, of ``input:<i>`` and
            ``layer:<key>`` arrays (the golden layout). ``None``: run Keras live.
        atol: the tolerance (see the module docstring); must be positive.
        weights: the weights-only ``.h5`` of an architecture ``.json``.
        custom_layers: as for :func:`tlp.load_keras` (live Keras cannot load such models: give a reference).

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is True when every compared layer is within ``atol``.

    Raises:
        InputError: bad ``atol``, inputs or reference.
        KerasUnavailableError: no reference was given and Keras cannot run the model here.
        UnsupportedLayerError, UnsupportedOptionError: the model cannot be converted.

    Example:
        >>> report = tlp.verify("model.keras")
        >>> report.ok, [(r.name, r.max_abs) for r in report.rows]
    """
    if not isinstance(atol, (int, float)) or isinstance(atol, bool) or not np.isfinite(atol) or atol <= 0:
        raise InputError(f"atol must be a positive number. Received {atol!r}.")
    ref_arrays, ref_name = _read_reference(reference) if reference is not None else (None, "")
    model, spec, keras_model = _load(model_or_path, weights, custom_layers)
    info = dict(model.source_info)
    from torch_lstm_probe.converters.decisions import writer_name  # lazy: the runtime never needs the converters

    writer = writer_name(str(info.get("keras_version", "")) or "3", str(info.get("library", "keras")))
    inputs, origin = _choose_inputs(model, x, ref_arrays)
    model.reset_states()
    acts = probe(model, inputs if len(inputs) > 1 else inputs[0])  # first: wrong inputs fail here, before Keras
    model.reset_states()
    if ref_arrays is not None:
        expected = {k[len("layer:") :]: v for k, v in ref_arrays.items() if k.startswith("layer:")}
        if not expected:
            raise InputError(f"reference {ref_name}: holds no layer:<name> arrays. Expected the golden layout.")
        described = f"stored reference {ref_name}"
    else:
        expected, described = _live_reference(model, info, keras_model, inputs)
    masked = _masked_layers(model, inputs)
    report = VerifyReport(
        source=str(info.get("source", model_or_path)),
        writer=writer,
        reference=described,
        inputs=[
            f"{s['name']} {tuple(a.shape)} {a.dtype} ({origin})"
            for s, a in zip(model.input_specs, inputs, strict=False)
        ],
        atol=float(atol),
    )
    layers = {layer.name: layer for layer in spec.layers} if spec is not None else {}
    calls = _calls_by_layer(model)
    for name in model.layer_names:
        row = _compare(name, acts, expected, float(atol))
        module = model.layer(name)
        row.class_name = layers[name].class_name if name in layers else _type_name(module)
        row.decisions = _decisions(module, info, calls.get(name, []), layers.get(name), masked)
        report.rows.append(row)
    if not any(r.ok is not None for r in report.rows):
        raise InputError(
            f"{described}: none of its arrays matches a layer of this model (probe keys {sorted(acts)[:8]}...). "
            "Expected layer:<name> or layer:<name>:<k> arrays."
        )
    return report


# ---------------------------------------------------------------------------------------------- loading


def _load(model_or_path: Any, weights: Any, custom_layers: Any) -> tuple[KerasModel, Any, Any]:
    """``(converted model, its ModelSpec or None, the live keras.Model or None)``."""
    from torch_lstm_probe import converters  # lazy: the runtime never needs the converters

    if isinstance(model_or_path, KerasModel):
        return model_or_path, _spec_of(model_or_path, weights), None
    if isinstance(model_or_path, (str, os.PathLike)):
        spec = converters.read(model_or_path, weights=weights)
        return _converted(spec, custom_layers), spec, None
    if hasattr(model_or_path, "layers") and hasattr(model_or_path, "inputs"):  # an in-memory keras.Model
        spec = converters.read(model_or_path)
        return _converted(spec, custom_layers), spec, model_or_path
    raise InputError(
        f"verify takes a Keras file path, a converted model or a keras.Model. Received {type(model_or_path).__name__}."
    )


def _converted(spec: Any, custom_layers: Any) -> KerasModel:
    """``spec`` converted as :func:`tlp.load_keras` converts it (one read of the file serves both)."""
    from torch_lstm_probe.converters import convert_with_source

    return convert_with_source(spec, custom_layers).eval()


def _spec_of(model: KerasModel, weights: Any) -> Any:
    """The spec of the file a converted model came from, when that file is still there (else None)."""
    from torch_lstm_probe import converters

    source = str(model.source_info.get("source", ""))
    if not source or not Path(source).is_file():
        return None
    try:
        return converters.read(source, weights=weights)
    except TorchLstmProbeError:
        return None  # the file changed since: describe from the module configs alone


def _read_reference(reference: Any) -> tuple[dict[str, np.ndarray], str]:
    if isinstance(reference, Mapping):
        return {str(k): np.asarray(v) for k, v in reference.items()}, "(arrays)"
    path = Path(reference)
    if path.suffix.lower() not in REFERENCE_SUFFIXES:
        raise InputError(
            f"reference {path}: expected a .npz or .safetensors file of input:<i> and layer:<name> arrays. "
            f"Received {path.name!r}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"reference file not found: {path}")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}, str(path)
        from safetensors.numpy import load_file

        return dict(load_file(str(path))), str(path)
    except Exception as err:  # numpy and safetensors report damaged files with many exception types
        raise InputError(f"reference {path}: cannot read it: {type(err).__name__}: {err}") from err


# ---------------------------------------------------------------------------------------------- inputs


def _choose_inputs(
    model: KerasModel, x: Any, ref_arrays: Mapping[str, np.ndarray] | None
) -> tuple[list[np.ndarray], str]:
    stored = sorted((k for k in (ref_arrays or {}) if k.startswith("input:")), key=lambda k: _index(k))
    if stored and x is not None:
        raise InputError(
            "give inputs or a reference that holds its inputs, not both: the reference's layer arrays were "
            "computed on its own input:<i> arrays."
        )
    if stored:
        return [np.asarray(ref_arrays[k]) for k in stored], "from the reference"  # type: ignore[index]
    if ref_arrays is not None and x is None:
        raise InputError(
            "the reference holds no input:<i> arrays, so its layer arrays cannot be reproduced. Fix: give the "
            "inputs they were computed on (--input X.npy / x=)."
        )
    if x is None:
        return generate_inputs(model), "generated"
    return _as_input_list(model, x), "given"


def _index(key: str) -> int:
    try:
        return int(key.split(":", 1)[1])
    except ValueError as err:
        raise InputError(f"reference key {key!r}: expected input:<i> with an integer i.") from err


def _as_input_list(model: KerasModel, x: Any) -> list[np.ndarray]:
    names = model.input_names
    if isinstance(x, Mapping):
        missing = [n for n in names if n not in x]
        if missing or len(x) != len(names):
            raise InputError(f"the model takes inputs {names}. Received names {sorted(x)}.")
        values = [x[n] for n in names]
    elif isinstance(x, (list, tuple)):
        values = list(x)
    else:
        values = [x]
    if len(values) != len(names):
        raise InputError(f"the model takes {len(names)} input(s) {names}, in this order. Received {len(values)}.")
    return [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values]


def generate_inputs(
    model: KerasModel, batch: int = GENERATED_BATCH, steps: int = GENERATED_STEPS, seed: int = 0
) -> list[np.ndarray]:
    """Inputs that fit the model's input spec, one array per input in Keras input order.

    Fixed axes keep their size; a free batch axis gets ``batch`` rows and any other free axis
    ``steps``. An integer input read by an ``Embedding`` gets token ids in ``[1, input_dim)``,
    and, when the Embedding has ``mask_zero``, trailing zeros (padding) on all rows but the first,
    each row keeping at least one token. A string input gets short texts (:func:`generate_texts`).
    Other inputs are float32 standard normal.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in model.input_specs:
        shape = spec.get("shape") or [None, None]
        dims = [batch if shape[0] is None else int(shape[0])] + [steps if d is None else int(d) for d in shape[1:]]
        dtype = str(spec.get("dtype", "float32"))
        embedding = embedding_reading(model, spec["name"])
        if dtype == "string":
            arrays.append(generate_texts(model, spec["name"], dims, rng))
        elif dtype == "bool":
            arrays.append(np.ones(dims, dtype=bool))
        elif embedding is not None or not dtype.startswith(("float", "bfloat")):
            vocab, mask_zero = embedding if embedding is not None else (2, False)
            ids = rng.integers(1, max(vocab, 2), size=dims).astype(np.int32)  # (N, L, ...) ids in [1, vocab)
            if mask_zero and ids.ndim >= 2 and ids.shape[1] > 1:
                for row in range(1, ids.shape[0]):
                    pad = min(ids.shape[1] - 1, row * max(1, ids.shape[1] // 4))
                    ids[row, ids.shape[1] - pad :] = 0  # trailing padding
            arrays.append(ids)
        else:
            arrays.append(rng.standard_normal(dims).astype(np.float32))
    return arrays


def generate_texts(model: KerasModel, input_name: str, dims: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """An object array of str of shape ``dims`` for string input ``input_name``.

    Words come from the vocabulary of the ``TextVectorization``/``StringLookup`` reading the input (a few
    fixed words without one). A ``TextVectorization`` that splits gets texts of 1 to 5 words with punctuation,
    one of them holding an unknown word; one that does not split, and a ``StringLookup``, get one word per
    element, one of them unknown unless the layer has ``num_oov_indices=0`` (Keras raises on unknown tokens
    then).
    """
    config = _text_layer_config(model, input_name)
    vocabulary = tuple(getattr(config, "vocabulary", ()) or ())
    words = [w for w in vocabulary if w.strip() and len(w.split()) == 1] or list(_GENERIC_WORDS)
    unknown = config is None or int(getattr(config, "num_oov_indices", 1)) > 0
    splits = config is not None and getattr(config, "split", None) is not None
    out = np.empty(int(np.prod(dims, dtype=np.int64)), dtype=object)
    for k in range(out.size):
        if splits:
            picked = [str(w) for w in rng.choice(words, size=1 + k % 5)]
            if k % 3 == 1:
                picked[-1] += _PUNCTUATION[k % len(_PUNCTUATION)]
            if k % 3 == 2 and len(picked) > 1:
                picked[0] += ","
            if k == 1 and unknown:
                picked.insert(len(picked) // 2, _UNKNOWN_WORD)
            out[k] = " ".join(picked)
        else:
            out[k] = _UNKNOWN_WORD if k == 1 and unknown else str(rng.choice(words))
    return out.reshape(tuple(dims))


def _text_layer_config(model: KerasModel, input_name: str) -> Any:
    """The config of the ``TextVectorization``/``StringLookup`` reading model input ``input_name``, or None."""
    for node in _nodes(model):
        if not any(list(ref)[:1] == [input_name] for ref in node["inputs"]):
            continue
        module = model.layer(node["layer"])
        config: Any = getattr(module, "config", None)
        if hasattr(config, "vocabulary") and hasattr(config, "num_oov_indices"):
            return config
        if isinstance(module, KerasModel) and module.input_names:
            inner = _text_layer_config(module, module.input_names[0])
            if inner is not None:
                return inner
    return None


def embedding_reading(model: KerasModel, input_name: str) -> tuple[int, bool] | None:
    """``(input_dim, mask_zero)`` of the Embedding(s) reading model input ``input_name``, if any.

    With several readers: the smallest ``input_dim`` and whether any masks zeros. A nested model
    that reads the input is searched through its own first input.
    """
    found: list[tuple[int, bool]] = []
    for node in _nodes(model):
        if not any(list(ref)[:1] == [input_name] for ref in node["inputs"]):
            continue
        module = model.layer(node["layer"])
        config: Any = getattr(module, "config", None)
        if getattr(module, "takes_indices", False) and hasattr(config, "num_embeddings"):
            found.append((int(config.num_embeddings), bool(getattr(config, "mask_zero", False))))
        elif isinstance(module, KerasModel) and module.input_names:
            inner = embedding_reading(module, module.input_names[0])
            if inner is not None:
                found.append(inner)
    if not found:
        return None
    return min(v for v, _ in found), any(m for _, m in found)


def _nodes(model: KerasModel) -> list[dict[str, Any]]:
    """The graph nodes (``layer``, ``inputs``, ``kwargs``), empty when a custom module keeps the config from being built."""
    try:
        return list(model.get_config()["nodes"])
    except TypeError:
        return []


# ---------------------------------------------------------------------------------------------- Keras


def _live_reference(
    model: KerasModel, info: Mapping[str, Any], keras_model: Any, inputs: Sequence[np.ndarray]
) -> tuple[dict[str, np.ndarray], str]:
    """Every layer's output computed by Keras (keys as :func:`probe` names them), and the reference in words."""
    from torch_lstm_probe.converters.spec import parse_version

    version = parse_version(str(info.get("keras_version", "")) or None)
    library = "keras" if version.major >= 3 else "tf_keras"
    fix = (
        "Fix: pip install 'torch-lstm-probe[keras]', or pass --reference REF.npz (reference= in Python) holding "
        "input:<i> and layer:<name> arrays"
    )
    if keras_model is None:
        source = str(info.get("source", ""))
        if not source or not Path(source).is_file():
            raise KerasUnavailableError(
                f"verify runs Keras on the model's file, and this model's source {source!r} is not a file. {fix}."
            )
        klib = _import_keras(library, fix)
        keras_model = _keras_load(klib, library, source)
    else:
        klib = _import_keras("tf_keras" if type(keras_model).__module__.startswith("tf_keras") else "keras", fix)
    for layer in keras_model.layers:
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_states"):
            layer.reset_states()
    outputs, keys = [], []
    for layer in keras_model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            out = layer.output  # raises for a layer called more than once
        except (AttributeError, ValueError, RuntimeError):
            continue
        if isinstance(out, (list, tuple)):
            for k, o in enumerate(out):
                outputs.append(o)
                keys.append(f"{layer.name}:{k}")
        else:
            outputs.append(out)
            keys.append(layer.name)
    try:
        sub = klib.Model(keras_model.inputs, outputs)  # one model over every layer's output
        values = sub(list(inputs), training=False)
    except Exception as err:  # Keras raises many types; a model Keras cannot run here is not our bug
        raise KerasUnavailableError(
            f"{library} could not run the model ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}). "
            "Fix: pass --reference REF.npz (reference= in Python) computed where Keras runs it."
        ) from err
    values = values if isinstance(values, (list, tuple)) else [values]
    name = f"{library} {getattr(klib, '__version__', '?')}"
    return {k: np.asarray(v) for k, v in zip(keys, values)}, f"live {name} (one sub-model over every layer output)"


def _import_keras(library: str, fix: str) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return importlib.import_module(library)
    except ImportError as err:
        raise KerasUnavailableError(
            f"verify needs {library} to compute the reference for this file, and it cannot be imported ({err}). {fix}."
        ) from err


def _keras_load(klib: Any, library: str, source: str) -> Any:
    try:
        if library == "keras":
            return klib.saving.load_model(source, compile=False)
        return klib.models.load_model(source, compile=False)
    except Exception as err:  # Keras raises many types for files it cannot read
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise KerasUnavailableError(
            f"{library} could not load {source} ({type(err).__name__}: {first}). Fix: pass --reference REF.npz "
            "(reference= in Python) computed where Keras loads it."
        ) from err


# ---------------------------------------------------------------------------------------------- comparing


def _keys_of(name: str, keys: Sequence[str]) -> list[str]:
    """The probe keys of layer ``name``'s own outputs (not of layers nested inside it)."""
    return [k for k in keys if k == name or k.startswith((f"{name}:", f"{name}@"))]


def _compare(name: str, acts: Mapping[str, torch.Tensor], expected: Mapping[str, np.ndarray], atol: float) -> VerifyRow:
    row = VerifyRow(name=name, class_name="")
    keys = _keys_of(name, list(acts))
    compared = [k for k in keys if k in expected]
    row.keys = compared
    if not keys:
        row.note = "no output recorded by probe"
        return row
    if not compared:
        row.note = "not in the reference"
        return row
    row.ok, row.max_abs, row.max_rel = True, 0.0, 0.0
    notes = []
    for key in compared:
        ours = acts[key].detach().cpu().double().numpy()
        ref = np.asarray(expected[key], dtype=np.float64)
        if ours.shape != ref.shape:
            row.ok = False
            notes.append(f"{key}: shape {ours.shape} vs reference {ref.shape}")
            continue
        if ours.size == 0:
            continue
        diff = np.abs(ours - ref)
        both_nan = np.isnan(ours) & np.isnan(ref)
        diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
        flat = int(np.argmax(diff))
        err = float(diff.flat[flat])
        finite = np.abs(ref[np.isfinite(ref)])
        magnitude = float(finite.max()) if finite.size else 0.0
        rel = err / magnitude if magnitude > 0 else (0.0 if err == 0 else float("inf"))
        if err > atol * max(1.0, magnitude):
            row.ok = False
        if err >= (row.max_abs or 0.0):
            row.max_abs, row.worst = err, tuple(int(i) for i in np.unravel_index(flat, diff.shape))
            row.worst_key = key
        row.max_rel = max(row.max_rel or 0.0, rel)
    missing = [k for k in keys if k not in expected]
    if missing:
        notes.append(f"not in the reference: {', '.join(missing)}")
    row.note = "; ".join(notes) or None
    return row


def _masked_layers(model: KerasModel, inputs: Sequence[np.ndarray]) -> set[str] | None:
    """The recurrent layers a mask reached in this run (from probe's ``<layer>/mask``); None when unknown."""
    recurrent = [n for n in model.layer_names if _type_name(model.layer(n)) in _RECURRENT_TYPES]
    if not recurrent:
        return set()
    try:
        acts = probe(model, inputs if len(inputs) > 1 else inputs[0], layers=recurrent, gates=True)
    except TorchLstmProbeError:
        return None  # gates cannot be captured for this model: the mask column says "if a mask arrives"
    finally:
        model.reset_states()
    return {k.split("/")[0].split("@")[0] for k in acts if k.endswith("/mask")}


def _type_name(module: torch.nn.Module) -> str:
    from .registry import module_type_name

    return module_type_name(module) or type(module).__name__


def _calls_by_layer(model: KerasModel) -> dict[str, list[Mapping[str, Any]]]:
    calls: dict[str, list[Mapping[str, Any]]] = {}
    for node in _nodes(model):
        calls.setdefault(node["layer"], []).append(dict(node.get("kwargs") or {}))
    return calls


def _decisions(
    module: torch.nn.Module,
    info: Mapping[str, Any],
    calls: Sequence[Mapping[str, Any]],
    layer: Any,
    masked: set[str] | None,
) -> list[str]:
    from torch_lstm_probe.converters.decisions import describe_decisions
    from torch_lstm_probe.registry import module_type_name

    type_name = module_type_name(module)
    get_config = getattr(module, "get_config", None)
    config = get_config() if type_name is not None and callable(get_config) else None
    name = layer.name if layer is not None else None
    return describe_decisions(
        type_name,
        config,
        str(info.get("keras_version", "")) or "3",
        str(info.get("library", "keras")),
        calls,
        layer,
        None if masked is None else (name in masked if name is not None else None),
    )


# ---------------------------------------------------------------------------------------------- table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def format_report(report: VerifyReport) -> str:
    """The table ``torch-lstm-probe verify`` prints: one row per layer, its decisions on continuation lines."""
    lines = [
        f"Model from {report.source} (written by {report.writer})",
        f"  reference: {report.reference}",
        *[f"  input:     {text}" for text in report.inputs],
        f"  tolerance: max abs error <= atol * max(1, max |reference|), atol {report.atol:g}",
        "",
    ]
    header = ("layer", "class", "max abs err", "max rel err", "worst at", "ok", "decisions")
    table: list[tuple[str, ...]] = [header]
    details: list[list[str]] = [[]]
    for row in report.rows:
        worst = "-"
        if row.worst is not None:
            worst = str(row.worst) if row.worst_key == row.name else f"{row.worst_key} {row.worst}"
        status = "-" if row.ok is None else ("ok" if row.ok else "FAIL")
        decisions = ([f"note: {row.note}"] if row.note else []) + row.decisions
        table.append(
            (row.name, row.class_name, _number(row.max_abs), _number(row.max_rel), worst, status, *decisions[:1])
        )
        details.append(decisions[1:])
    widths = [max(len(r[k]) for r in table if len(r) > k) for k in range(len(header) - 1)]
    indent = sum(widths) + 2 * len(widths)
    for k, (cells, more) in enumerate(zip(table, details)):
        lines.append("  ".join(c.ljust(widths[i]) if i < len(widths) else c for i, c in enumerate(cells)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
        lines += [" " * indent + text for text in more]
    lines.append("")
    failed = report.failed
    compared = [r for r in report.rows if r.ok is not None]
    if failed:
        lines.append(
            f"{len(failed)} of {len(compared)} layer(s) beyond atol {report.atol:g}: "
            + ", ".join(r.name for r in failed)
        )
    else:
        lines.append(f"All {len(compared)} compared layer(s) within atol {report.atol:g}.")
    skipped = [r.name for r in report.rows if r.ok is None]
    if skipped:
        lines.append(f"Not compared: {', '.join(skipped)}.")
    return "\n".join(lines)
