"""Live parity of the call-time rules that differ between Keras generations.

A converted model follows the rules of the Keras that wrote its file, so each case below runs
in Keras 3 and in tf_keras, is saved in both formats of that library, loaded with
``tlp.load_keras`` and compared layer by layer with Keras on the same sequence of calls.

Audit of the rules (K2 = Keras 1/2, tf.keras, tf_keras; K3 = Keras 3):

==========================  ==============================  ==============================  =================================  =====================================
rule                        K2                              K3                              implemented in                     covered by
==========================  ==============================  ==============================  =================================  =====================================
stateful RNN called with    tf.keras/tf_keras: the carried  the given ``initial_state``     ``initial_state_rule`` from        ``test_stateful_calls``
``initial_state``           state while any element of any  always (standalone Keras        ``converters/recurrent.py``;
                            carried state tensor is         2.0-2.3 did the same)           ``RecurrentMixin._initial_states``
                            non-zero, else the given one
automatic mask of an RNN    passed (the states travel as    passed only to a call with      ``_wire_call`` (rnn branch) →      ``test_masked_decoder``,
called with initial_state   extra inputs; mask[0] is used)  exactly one tensor argument:    node kwarg ``apply_mask=False``    ``test_bidirectional_decoder``
tensors (seq2seq decoder,                                   such a call runs unmasked
Bidirectional too)
output mask of that call    the input mask (sequence        the input mask too: the first   ``compute_mask`` of the recurrent  ``test_masked_decoder`` (a second
                            outputs)                        argument's mask is the          modules, which still receive it    RNN and a masked mean read it)
                                                            ``previous_mask``
explicit ``mask=None``      no mask, and no output mask     the same as no argument: a      ``_wire_call`` (rnn branch)        ``test_explicit_masks``
on an RNN call                                              one-tensor call still gets
                                                            the automatic mask
explicit ``mask=tensor``    applied, and the output mask    applied, and the output mask    graph executor (``run_graph``)     ``test_explicit_masks``
with ``initial_state``
merge layers with masks     output mask: AND of the         OR when every input has one,    ``mask_rules`` of                  ``test_live_layers.py``
(Add, Concatenate, ...)     present masks; values ignore    else none; Multiply/Maximum/    ``layers/merge.py``                (``test_merge_masked``,
                            masks                           Minimum skip masked entries                                        ``test_merge_compute_mask``)
``hard_sigmoid``            ``clip(0.2 x + 0.5, 0, 1)``     ``clip(x / 6 + 0.5, 0, 1)``     ``resolve_activation`` by          ``test_live_lstm.py`` (hard_sigmoid
                                                                                            ``keras_version``                  cases), ``test_stateful_calls`` (GRU)
GRU ``reset_after``         default False up to Keras 2.2,  default True; always in the     read from the config; a missing    ``test_live_gru_bidirectional.py``
                            True in tf.keras 2 / tf_keras   config                          key: the bias shape decides
``zero_output_for_mask``    default False; Bidirectional    the same                        ``converters/bidirectional.py``    ``test_bidirectional_decoder``
                            forces ``return_sequences``
masked step output before   tf.keras/tf_keras: 0;           0                               ``prev_out`` starts at zeros in    ``test_masked_decoder`` (left
the first real step         standalone Keras 1/2 on                                         the step loops                     padding after an initial state)
                            TensorFlow: the carried ``h``
                            (not reproduced, see below)
==========================  ==============================  ==============================  =================================  =====================================

Not reproduced: standalone Keras 1/2 with the TensorFlow backend (not unrolled) output the
carried ``h`` rather than 0 at masked steps before a row's first real step, which only differs
when the start state is non-zero; tf.keras and tf_keras output 0. The file's ``backend`` is
not part of the conversion context, and that Keras cannot run beside TensorFlow 2 to be tested.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_close, library_name, randomize_biases, save, seed
from torch_lstm_probe.layers.gru import GRU, GRUConfig
from torch_lstm_probe.layers.lstm import LSTM, LSTMConfig

BATCH, STEPS, FEATURES, UNITS = 2, 4, 3, 3
VOCAB, EMBED = 9, 4
STATE_COUNT = {"LSTM": 2, "GRU": 1, "SimpleRNN": 1}


# ---------------------------------------------------------------------------- helpers


def _formats(klib) -> tuple[str, ...]:
    """Both file formats of the library, its native one first."""
    return ("keras", "h5") if library_name(klib) == "keras" else ("h5", "keras")


def _sources(klib, model, tmp_path: Path) -> list[tuple[str, Any]]:
    """The model saved in both formats (before any call, so stateful layers hold zeros)."""
    return [(f".{fmt}", save(model, tmp_path, fmt)) for fmt in _formats(klib)]


def _probe_model(klib, model):
    """A Keras model sharing ``model``'s layers whose outputs are every layer's outputs,
    keyed like ``tlp.probe``; one call of it advances stateful layers once, like ``model``."""
    keys, outputs = [], []
    for layer in model.layers:
        if layer.__class__.__name__ == "InputLayer":
            continue
        out = layer.output
        if isinstance(out, (list, tuple)):
            keys += [f"{layer.name}:{k}" for k in range(len(out))]
            outputs += list(out)
        else:
            keys.append(layer.name)
            outputs.append(out)
    return keys, klib.Model(model.inputs, outputs)


def _keras_run(klib, model, calls: list[Any]) -> list[dict[str, np.ndarray]]:
    """Every layer's output for each call in ``calls``; the string ``"reset"`` resets states."""
    keys, probe_model = _probe_model(klib, model)
    results = []
    for inputs in calls:
        if isinstance(inputs, str):
            for layer in model.layers:
                if getattr(layer, "stateful", False):
                    layer.reset_states()
            continue
        values = probe_model(inputs if len(inputs) > 1 else inputs[0], training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        results.append({k: np.asarray(v) for k, v in zip(keys, values)})
    return results


def _torch_run(converted, calls: list[Any]) -> list[dict[str, torch.Tensor]]:
    results = []
    for inputs in calls:
        if isinstance(inputs, str):
            converted.reset_states()
            continue
        results.append(tlp.probe(converted, list(inputs) if len(inputs) > 1 else inputs[0]))
    return results


def _check(klib, model, calls: list[Any], tmp_path: Path) -> list[dict[str, np.ndarray]]:
    """Runs ``calls`` in Keras and in the model loaded from each file; compares every layer of
    every call. Returns Keras' values."""
    sources = _sources(klib, model, tmp_path)
    expected = _keras_run(klib, model, calls)
    failures = []
    for label, source in sources:
        got = _torch_run(tlp.load_keras(source), calls)
        for k, (want, have) in enumerate(zip(expected, got)):
            missing = sorted(set(want) - set(have))
            assert not missing, f"probe lacks {missing}; has {sorted(have)}"
            for key, value in want.items():
                try:
                    assert_close(have[key], value, ATOL["cpu_float32"], f"call {k}, layer {key}")
                except AssertionError as err:
                    failures.append(f"[{library_name(klib)} {label}] {err}")
    assert not failures, "\n".join(failures)
    return expected


def _max_gap(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x[key], np.float64) - np.asarray(y[key], np.float64)))) for x, y in zip(a, b)
    )


def _rnn(klib, kind: str, **options: Any):
    return getattr(klib.layers, kind)(UNITS, **options)


# ---------------------------------------------------------------------------- stateful + initial_state


def _stateful_model(klib, kind: str, bidirectional: bool):
    """Stateful layers on ``x``: ``given`` called with ``initial_state`` inputs (then a Dense)
    and, unless wrapped in Bidirectional, ``carried`` called without."""
    k, L = klib, klib.layers
    x = k.Input(batch_shape=(BATCH, STEPS, FEATURES), name="x")
    n_states = STATE_COUNT[kind] * (2 if bidirectional else 1)
    states = [k.Input(batch_shape=(BATCH, UNITS), name=f"s{i}") for i in range(n_states)]
    # Keras 3's Bidirectional.compute_mask fails on stateful return_state, so only outputs there.
    options: dict[str, Any] = {"stateful": True, "return_sequences": True, "return_state": not bidirectional}
    if kind == "GRU":
        options["recurrent_activation"] = "hard_sigmoid"  # the formula differs by generation too
    outputs = []
    for name in ("given",) if bidirectional else ("given", "carried"):
        if bidirectional:
            layer = L.Bidirectional(_rnn(klib, kind, **options), name=name)
        else:
            layer = getattr(L, kind)(UNITS, name=name, **options)
        outs = layer(x, initial_state=states) if name == "given" else layer(x)
        outputs += list(outs) if isinstance(outs, (list, tuple)) else [outs]
        if name == "given":
            outputs[0] = L.Dense(2, name="head")(outputs[0])
    model = k.Model([x, *states], outputs, name=f"stateful_{kind}_{int(bidirectional)}")
    randomize_biases(model, np.random.default_rng(1))
    return model, n_states


def _stateful_calls(n_states: int, rng: np.random.Generator) -> list[Any]:
    """Three calls, a reset, two more; every call with fresh inputs and initial states."""
    calls: list[Any] = []
    for k in range(5):
        if k == 3:
            calls.append("reset")
        x = rng.standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)
        states = [(rng.standard_normal((BATCH, UNITS)) * 0.8).astype(np.float32) for _ in range(n_states)]
        calls.append([x, *states])
    return calls


def _other_rule(converted) -> None:
    """Swaps every recurrent module's initial_state_rule (a mutant the test must reject)."""
    swap = {"given": "carried_unless_zero", "carried_unless_zero": "given"}
    for module in converted.modules():
        cfg = getattr(module, "config", None)
        if dataclasses.is_dataclass(cfg) and hasattr(cfg, "initial_state_rule"):
            module.config = dataclasses.replace(cfg, initial_state_rule=swap[cfg.initial_state_rule])


@pytest.mark.keras
@pytest.mark.parametrize(
    "kind, bidirectional",
    [("LSTM", False), ("GRU", False), ("SimpleRNN", False), ("LSTM", True)],
    ids=["LSTM", "GRU", "SimpleRNN", "Bidirectional-LSTM"],
)
def test_stateful_calls(klib, tmp_path, kind, bidirectional):
    """Stateful layers over 3 calls, reset_states, 2 more calls, with and without initial_state;
    each call passes new non-zero states, which tf_keras ignores while the carried state is
    non-zero and Keras 3 always uses."""
    seed(klib)
    model, n_states = _stateful_model(klib, kind, bidirectional)
    calls = _stateful_calls(n_states, np.random.default_rng(7))
    expected = _check(klib, model, calls, tmp_path)
    # The two rules must give different numbers here, or this case could not tell them apart.
    mutant = tlp.load_keras(_sources(klib, model, tmp_path)[0][1])
    _other_rule(mutant)
    got = _torch_run(mutant, calls)
    assert _max_gap(expected, got, "given" if bidirectional else "given:0") > 1e-3
    if not bidirectional:
        assert _max_gap(expected, got, "carried:0") <= ATOL["cpu_float32"]


# ---------------------------------------------------------------------------- masked seq2seq decoders

# Decoder tokens: right padding, left padding, a hole; 0 is the padding id.
DEC_TOKENS = np.array([[3, 5, 0, 0], [0, 0, 2, 7], [4, 0, 6, 1]], dtype=np.int32)
ENC_TOKENS = np.array([[1, 2, 3, 0], [0, 4, 5, 6], [7, 0, 8, 2]], dtype=np.int32)


def _decoder_runs_masked(klib) -> bool:
    """Keras 3 runs a decoder called with initial_state tensors unmasked; tf_keras masks it."""
    return library_name(klib) == "tf_keras"


@pytest.mark.keras
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_masked_decoder(klib, tmp_path, kind):
    """``Embedding(mask_zero) -> encoder(return_state)``; ``Embedding(mask_zero) -> decoder``
    with ``initial_state=`` the encoder's states (and, for LSTM, once without); a SimpleRNN and a
    masked mean read the first decoder's output mask. The GRU decoder takes the state of a
    SimpleRNN encoder (one state ``h`` each), which keeps the case cheap."""
    seed(klib)
    k, L = klib, klib.layers
    enc_in = k.Input((STEPS,), dtype="int32", name="enc_in")
    dec_in = k.Input((STEPS,), dtype="int32", name="dec_in")
    enc_emb = L.Embedding(VOCAB, EMBED, mask_zero=True, name="enc_emb")(enc_in)
    dec_emb = L.Embedding(VOCAB, EMBED, mask_zero=True, name="dec_emb")(dec_in)
    encoder = "SimpleRNN" if kind == "GRU" else kind
    states = getattr(L, encoder)(UNITS, return_state=True, name="enc")(enc_emb)[1:]
    given = getattr(L, kind)(UNITS, return_sequences=True, name="given")(dec_emb, initial_state=list(states))
    top = L.SimpleRNN(UNITS, return_sequences=True, name="top")(given)
    outputs = [top, L.GlobalAveragePooling1D(name="pool")(top)]
    if kind == "LSTM":
        outputs.append(L.LSTM(UNITS, return_sequences=True, name="free")(dec_emb))
    model = k.Model([enc_in, dec_in], outputs, name=f"decoder_{kind}")
    randomize_biases(model, np.random.default_rng(2))
    (expected,) = _check(klib, model, [[ENC_TOKENS, DEC_TOKENS]], tmp_path)
    # Row 2 is masked at step 1: a masked step repeats the previous output.
    assert np.allclose(expected["given"][2, 1], expected["given"][2, 0]) == _decoder_runs_masked(klib), (
        "the case no longer tells the two mask rules apart"
    )
    if kind == "LSTM":
        assert np.allclose(expected["free"][2, 1], expected["free"][2, 0])
    # Either way the decoder's output mask reaches the next RNN.
    assert np.allclose(expected["top"][2, 1], expected["top"][2, 0])


@pytest.mark.keras
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_bidirectional_decoder(klib, tmp_path, kind):
    """``Embedding(mask_zero) -> Bidirectional(kind)`` with ``initial_state=[h_f, (c_f,) h_b,
    (c_b)]`` from inputs, then a SimpleRNN and a masked mean that read its output mask."""
    seed(klib)
    k, L = klib, klib.layers
    dec_in = k.Input((STEPS,), dtype="int32", name="dec_in")
    n_states = 2 * STATE_COUNT[kind]
    states = [k.Input((UNITS,), name=f"s{i}") for i in range(n_states)]
    emb = L.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(dec_in)
    dec = L.Bidirectional(_rnn(klib, kind, return_sequences=True), name="dec")(emb, initial_state=states)
    top = L.SimpleRNN(UNITS, return_sequences=True, name="top")(dec)
    pooled = L.GlobalAveragePooling1D(name="pool")(top)
    model = k.Model([dec_in, *states], [top, pooled], name=f"bi_decoder_{kind}")
    randomize_biases(model, np.random.default_rng(2))
    rng = np.random.default_rng(6)
    values = [(rng.standard_normal((3, UNITS)) * 0.8).astype(np.float32) for _ in range(n_states)]
    (expected,) = _check(klib, model, [[DEC_TOKENS, *values]], tmp_path)
    # zero_output_for_mask holds in Bidirectional: a masked step outputs 0 in both halves.
    assert np.allclose(expected["dec"][2, 1], 0.0) == _decoder_runs_masked(klib), (
        "the case no longer tells the two mask rules apart"
    )
    assert np.allclose(expected["top"][2, 1], expected["top"][2, 0])


# ---------------------------------------------------------------------------- explicit masks


@pytest.mark.keras
def test_explicit_masks(klib, tmp_path):
    """``mask=<input>`` next to initial_state is applied in both; ``mask=None`` on a one-tensor
    call means no mask in tf_keras and the automatic mask in Keras 3."""
    seed(klib)
    k, L = klib, klib.layers
    x_in = k.Input((STEPS, FEATURES), name="x")
    m_in = k.Input((STEPS,), dtype="bool", name="m")
    h_in, c_in = k.Input((UNITS,), name="h"), k.Input((UNITS,), name="c")
    masked = L.Masking(name="masking")(x_in)
    explicit = L.LSTM(UNITS, return_sequences=True, name="explicit")(x_in, initial_state=[h_in, c_in], mask=m_in)
    none_one = L.LSTM(UNITS, return_sequences=True, name="none_one")(masked, mask=None)
    none_two = L.GRU(UNITS, return_sequences=True, name="none_two")(masked, initial_state=[h_in], mask=None)
    after = L.SimpleRNN(UNITS, return_sequences=True, name="after")(none_one)
    model = k.Model([x_in, m_in, h_in, c_in], [explicit, after, none_two], name="explicit_masks")
    randomize_biases(model, np.random.default_rng(3))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)
    x[0, 2:] = 0.0  # Masking: right padding in row 0, a hole in row 1
    x[1, 1] = 0.0
    mask = np.array([[True, False, True, True], [False, True, True, False]])
    h, c = (rng.standard_normal((BATCH, UNITS)).astype(np.float32) for _ in range(2))
    (expected,) = _check(klib, model, [[x, mask, h, c]], tmp_path)
    keras3 = library_name(klib) == "keras"
    assert np.allclose(expected["explicit"][0, 1], expected["explicit"][0, 0])  # explicit mask applied
    assert np.allclose(expected["none_one"][0, 3], expected["none_one"][0, 2]) == keras3
    assert not np.allclose(expected["none_two"][0, 3], expected["none_two"][0, 2])  # unmasked in both


# ---------------------------------------------------------------------------- the runtime rules, without Keras


def _stateful(cls, config_cls, rule: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = config_cls(
        FEATURES, UNITS, return_sequences=True, stateful=True, batch_size=BATCH, initial_state_rule=rule
    )
    return cls(config).eval()


@pytest.mark.parametrize("cls, config_cls", [(LSTM, LSTMConfig), (GRU, GRUConfig)], ids=["LSTM", "GRU"])
def test_carried_unless_zero_is_one_test_over_the_whole_state(cls, config_cls):
    """The carried state wins as soon as any element of any state tensor, in any row, is
    non-zero: rows whose carried state is zero do not fall back to the given one."""
    module = _stateful(cls, config_cls, "carried_unless_zero")
    stateless = cls(dataclasses.replace(module.config, stateful=False, batch_size=None)).eval()
    stateless.load_state_dict(module.state_dict())
    x = torch.randn(BATCH, STEPS, FEATURES)  # (N, L, F)
    given = [torch.randn(BATCH, UNITS) for _ in module.STATE_NAMES]  # each (N, H)
    with torch.no_grad():
        assert torch.equal(module(x, initial_state=given), stateless(x, initial_state=given))  # carried is zero
        carried = [getattr(module, f"state_{name}").clone() for name in module.STATE_NAMES]
        assert torch.equal(module(x, initial_state=given), stateless(x, initial_state=carried))
        module.reset_states()
        last = module.STATE_NAMES[-1]
        getattr(module, f"state_{last}")[0, 0] = 0.5  # one element of one state tensor, in row 0
        start = [torch.zeros(BATCH, UNITS) for _ in module.STATE_NAMES]
        start[-1][0, 0] = 0.5
        assert torch.equal(module(x, initial_state=given), stateless(x, initial_state=start))


@pytest.mark.parametrize("rule", ["given", "carried_unless_zero"])
def test_initial_state_rule_exports(rule):
    """The rule is a torch.where on a 0-d flag: an exported program follows it call by call."""
    module = _stateful(LSTM, LSTMConfig, rule)

    class Call(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return self.inner(x, initial_state=[h, c])

    wrapper = Call(module)
    x, h, c = torch.randn(BATCH, STEPS, FEATURES), torch.randn(BATCH, UNITS), torch.randn(BATCH, UNITS)
    with torch.no_grad():
        expected = [wrapper(x, h, c), wrapper(x, h, c)]
    module.reset_states()
    exported = torch.export.export(wrapper, (x, h, c)).module()
    got = [exported(x, h, c), exported(x, h, c)]
    for e, g in zip(expected, got):
        assert_close(g, e, ATOL["cpu_float32"], f"exported, rule {rule}")
    assert (_max_gap([{"y": expected[0]}], [{"y": expected[1]}], "y") > 1e-3) == (rule == "carried_unless_zero")


def test_apply_mask_false_runs_unmasked_and_unknown_rules_are_refused():
    module = _stateful(LSTM, LSTMConfig, "given")
    plain = LSTM(dataclasses.replace(module.config, stateful=False, batch_size=None)).eval()
    plain.load_state_dict(module.state_dict())
    x = torch.randn(BATCH, STEPS, FEATURES)
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    with torch.no_grad():
        assert torch.equal(plain(x, mask=mask, apply_mask=False), plain(x))
        assert not torch.allclose(plain(x, mask=mask), plain(x))
    with pytest.raises(ValueError, match=r"initial_state_rule must be one of \['given', 'carried_unless_zero'\]"):
        LSTM(dataclasses.replace(module.config, initial_state_rule="keras2"))


@pytest.mark.keras
@pytest.mark.parametrize("written_as, rule", [("2.2.4-tf", "carried_unless_zero"), ("2.2.4", "given")])
def test_generation_is_read_from_the_version_suffix(tf_keras, tmp_path, written_as, rule):
    """tf.keras of TensorFlow 1.x-2.3 wrote "2.2.4-tf"/"2.3.0-tf": its stateful rule is tf_keras'.
    Standalone Keras 2.2.4 wrote the bare number and always used the given initial_state."""
    import h5py

    seed(tf_keras)
    model, n_states = _stateful_model(tf_keras, "LSTM", False)
    path = save(model, tmp_path, "h5")
    with h5py.File(path, "r+") as f:
        f.attrs["keras_version"] = written_as
    converted = tlp.load_keras(path)
    assert converted.source_info["keras_version"] == written_as
    assert converted.layer("given").config.initial_state_rule == rule
    if rule == "carried_unless_zero":  # the file is tf.keras': it must match tf_keras over calls
        calls = _stateful_calls(n_states, np.random.default_rng(3))
        expected = _keras_run(tf_keras, model, calls)
        got = _torch_run(converted, calls)
        assert _max_gap(expected, got, "given:0") <= ATOL["cpu_float32"]


@pytest.mark.keras
@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_explicit_mask_none_on_a_one_tensor_call(klib, tmp_path, fmt):
    """``layer(x, mask=None)``: tf_keras applies no mask; Keras 3 treats it as absent and passes
    the automatic mask (here a masked mean over the non-padding steps)."""
    seed(klib)
    L = klib.layers
    ids = klib.Input((5,), dtype="int32", name="ids")
    e = L.Embedding(9, 3, mask_zero=True, name="emb")(ids)
    pooled = L.GlobalAveragePooling1D(name="pool")(e, mask=None)
    model = klib.Model(ids, pooled)
    x = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 0]], dtype=np.int32)
    want = np.asarray(model(x))
    got = tlp.probe(tlp.load_keras(save(model, tmp_path, fmt)), x, layers=["pool"])["pool"]
    assert_close(got, want, ATOL["cpu_float32"], "pool")
    unmasked = np.asarray(model.get_layer("emb")(x)).mean(axis=1)
    masked_in_keras = np.abs(want - unmasked).max() > 1e-3  # the two rules give different numbers here
    assert masked_in_keras == (library_name(klib) == "keras")
