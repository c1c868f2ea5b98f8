"""tlp.intervene: edits of gates and states inside the recurrence, checked against independent float64
step loops (tests/reference.py) that apply the same edit, layer by layer through stacked models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.reference import gru_np, lstm_np, simple_rnn_np
from tests.test_goldens import GOLDENS, golden_inputs, load_golden
from torch_lstm_probe.intervene import parse_edit
from torch_lstm_probe.layers import GRU, LSTM, SimpleRNN

ATOL = 1e-5


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def reference(module, x: np.ndarray, mask: np.ndarray | None, edits: dict | None) -> dict[str, np.ndarray]:
    """The independent float64 run of one recurrent module (its weights, its Keras options) with ``edits``."""
    cfg = module.config
    common = dict(mask=mask, go_backwards=cfg.go_backwards, zero_output_for_mask=cfg.zero_output_for_mask, edits=edits)
    w_ih, w_hh = _np(module.weight_ih_l0), _np(module.weight_hh_l0)
    if isinstance(module, LSTM):
        bias = _np(module.bias_ih_l0 + module.bias_hh_l0) if cfg.use_bias else None
        return lstm_np(x, w_ih.T, w_hh.T, bias, cfg.activation, cfg.recurrent_activation, **common)
    if isinstance(module, GRU):
        b_ih = _np(module.bias_ih_l0) if cfg.use_bias else None
        b_hh = _np(module.bias_hh_l0) if cfg.use_bias else None
        return gru_np(x, w_ih, w_hh, b_ih, b_hh, reset_after=cfg.reset_after, **common)
    assert isinstance(module, SimpleRNN)
    bias = _np(module.bias_ih_l0 + module.bias_hh_l0) if cfg.use_bias else None
    return simple_rnn_np(x, w_ih, w_hh, bias, cfg.activation, **common)


# An edit spec builds the same edit for NumPy (the reference) and for the model.
def _edit(spec, for_numpy: bool):
    kind, units, steps, arg = spec

    def fn(step, value):
        if steps is not None and step not in steps:
            return value
        out = value.copy() if for_numpy else value.clone()
        if kind == "set":
            out[:, units] = arg
        elif kind == "scale":
            out[:, units] = value[:, units] * arg
        elif kind == "patch":  # activation patching: the source run's value at this step
            source = arg[:, step][:, units]
            out[:, units] = source if for_numpy else torch.as_tensor(source, dtype=value.dtype, device=value.device)
        return out

    return fn


def _cells(model):
    """(probe key prefix, recurrent module, input layer name) in graph order, Bidirectional halves apart."""
    names = [None] + [p for p, _ in model.iter_layers()]  # None: the model's input
    for k, (path, module) in enumerate(model.iter_layers()):
        if isinstance(module, (LSTM, GRU, SimpleRNN)):
            yield path, module, names[k]
        for half in ("forward", "backward"):
            sub = getattr(module, f"{half}_layer", None)
            if sub is not None:
                yield f"{path}/{half}", sub, names[k]


CASES = [  # golden, edited key, gate, spec (kind, units, steps, value)
    ("keras_masked_lstm_gru", "lstm", "f", ("set", [0, 2], {1, 2, 3}, 1.0)),
    ("keras_masked_lstm_gru", "lstm", "i", ("scale", slice(None), None, 0.5)),
    ("keras_masked_lstm_gru", "lstm", "c", ("set", [1], None, 0.0)),
    ("keras_masked_lstm_gru", "lstm", "h", ("scale", [0], {0, 4}, -2.0)),
    ("keras_masked_lstm_gru", "lstm", "g", ("set", [3], {2}, 0.9)),
    ("keras_masked_lstm_gru", "lstm", "o", ("set", slice(0, 2), None, 0.0)),
    ("keras_masked_lstm_gru", "gru", "z", ("set", [0], None, 1.0)),
    ("keras_masked_lstm_gru", "gru", "r", ("scale", slice(None), {1, 3}, 0.0)),
    ("keras_masked_lstm_gru", "gru", "n", ("set", [2], None, 0.3)),
    ("keras_masked_lstm_gru", "gru", "h", ("set", [1], {2}, 0.5)),
    ("keras_masked_lstm_gru", "bidirectional/forward", "f", ("set", [0], None, 0.0)),
    ("keras_masked_lstm_gru", "bidirectional/backward", "c", ("scale", [1], None, 3.0)),
    ("keras_lstm_go_backwards", None, "f", ("set", [0, 1], {0, 1}, 1.0)),
    ("keras_simple_rnn", "simple_rnn", "h", ("set", [0], {1}, 0.0)),
    ("keras_simple_rnn", "simple_rnn_1", "h", ("scale", [2], None, 0.5)),
]


@pytest.mark.parametrize("name,where,gate,spec", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3][0]}" for c in CASES])
def test_an_edit_equals_the_float64_step_loop_with_the_same_edit_and_flows_downstream(name, where, gate, spec):
    _check_edit(name, where, gate, spec, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name,where,gate,spec", CASES[::2], ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES[::2]])
def test_an_edit_on_cuda_equals_the_float64_step_loop(name, where, gate, spec):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    _check_edit(name, where, gate, spec, "cuda")


def _check_edit(name, where, gate, spec, device):
    arrays, _ = load_golden(name)
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / f"{name}.keras").to(device)
    cells = list(_cells(model))
    where = where or cells[0][0]
    key = f"{where}/gates/{gate}"
    plain = tlp.probe(model, x, gates=True)
    edited = tlp.intervene(model, x, {key: _edit(spec, for_numpy=False)}, gates=True)
    assert not torch.equal(edited[key], plain[key]) or spec[0] == "scale" and spec[3] == 1.0
    seen = False
    for prefix, module, source in cells:
        inputs = np.asarray(x, np.float64) if source is None else _np(edited[source])
        layer = prefix.split("/")[0]
        mask = edited.get(f"{layer}/mask")
        edits = {gate: _edit(spec, for_numpy=True)} if prefix == where else None
        ref = reference(module, inputs, None if mask is None else _np(mask).astype(bool), edits)
        for g in module.GATE_NAMES:
            got = _np(edited[f"{prefix}/gates/{g}"])
            np.testing.assert_allclose(got, ref[g], atol=ATOL, err_msg=f"{prefix}/gates/{g}")
        seen = seen or prefix == where
    assert seen
    order = [p for p, _, _ in cells]
    later = [p for p in order[order.index(where) + 1 :] if p.split("/")[0] != where.split("/")[0]]
    for downstream in later:  # every later layer moved with the edit (and matched its reference above)
        assert not torch.allclose(edited[f"{downstream}/gates/h"], plain[f"{downstream}/gates/h"]), downstream


def test_activation_patching_puts_the_source_runs_values_into_the_target_run():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = np.asarray(golden_inputs(arrays)[0])
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    source = np.roll(x, 1, axis=0)  # other sentences
    recorded = _np(tlp.probe(model, source, gates=True)["lstm/gates/c"])
    spec = ("patch", [0, 1], {2, 3}, recorded)
    edited = tlp.intervene(model, x, {"lstm/gates/c": _edit(spec, for_numpy=False)}, gates=True)
    mask = _np(edited["lstm/mask"]).astype(bool)
    ref = reference(model.layer("lstm"), _np(edited["embedding"]), mask, {"c": _edit(spec, for_numpy=True)})
    np.testing.assert_allclose(_np(edited["lstm/gates/c"]), ref["c"], atol=ATOL)
    valid = mask[:, 2]
    np.testing.assert_allclose(_np(edited["lstm/gates/c"])[valid, 2][:, :2], recorded[valid, 2][:, :2], atol=ATOL)


def test_activation_patch_records_the_source_run_and_patches_the_target_run():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = np.asarray(golden_inputs(arrays)[0])
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    source = np.roll(x, 1, axis=0)
    recorded = _np(tlp.probe(model, source, gates=True)["bidirectional/backward/gates/c"])
    key = "bidirectional/backward/gates/c"
    patched = tlp.activation_patch(model, source, x, key, units=[1], steps=slice(2, 5), gates=True)
    spec = ("patch", [1], {2, 3, 4}, recorded)
    mask = _np(patched["bidirectional/mask"]).astype(bool)
    half = model.layer("bidirectional").backward_layer  # go_backwards: the reference reverses, as Keras does
    ref = reference(half, _np(patched["gru"]), mask, {"c": _edit(spec, for_numpy=True)})
    for g in half.GATE_NAMES:
        np.testing.assert_allclose(_np(patched[f"bidirectional/backward/gates/{g}"]), ref[g], atol=ATOL, err_msg=g)
    same = tlp.intervene(model, x, {key: _edit(spec, for_numpy=False)}, gates=True)
    torch.testing.assert_close(patched, same)  # the source's other layers ran fused there: rounding apart
    one_row = tlp.activation_patch(model, source[:1], x, "lstm/gates/h", steps=[3])  # one source row for all
    row = ("patch", slice(None), {3}, np.repeat(_np(tlp.probe(model, source[:1], gates=True)["lstm/gates/h"]), 5, 0))
    torch.testing.assert_close(one_row, tlp.intervene(model, x, {"lstm/gates/h": _edit(row, for_numpy=False)}))
    with pytest.raises(tlp.InputError, match=r"shape \(2, 7, \d+\).*a batch of 5 \(or 1\)\. Fix: record the source"):
        tlp.activation_patch(model, source[:2], x, "lstm/gates/h")


@pytest.mark.parametrize("name", ["keras_masked_lstm_gru", "keras_bidirectional", "keras_simple_rnn"])
def test_no_edits_equals_probe_exactly(name):
    arrays, _ = load_golden(name)
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / f"{name}.keras")
    plain, edited = tlp.probe(model, x, gates=True), tlp.intervene(model, x, {}, gates=True)
    assert list(plain) == list(edited) and all(torch.equal(plain[k], edited[k]) for k in plain)


def test_ready_made_edits_set_and_scale_units_at_steps():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    ours = tlp.intervene(model, x, {"lstm/gates/f": tlp.set_units(1.0, units=[0, 2], steps=[1, 2, 3])}, gates=True)
    theirs = tlp.intervene(model, x, {"lstm/gates/f": _edit(("set", [0, 2], {1, 2, 3}, 1.0), False)}, gates=True)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    halved = tlp.intervene(model, x, {"gru/gates/z": tlp.scale_units(0.5)}, gates=True)
    again = tlp.intervene(model, x, {"gru/gates/z": _edit(("scale", slice(None), None, 0.5), False)}, gates=True)
    assert all(torch.equal(halved[k], again[k]) for k in halved)


def test_bad_edits_get_clear_errors():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    with pytest.raises(tlp.ProbeKeyError, match="No gate 'lstm/gates/q'.*'lstm/gates/i'"):
        tlp.intervene(model, x, {"lstm/gates/q": tlp.set_units(0.0)})
    with pytest.raises(tlp.InputError, match=r"at step 0 returned \(2,\)\. Expected a tensor of shape"):
        tlp.intervene(model, x, {"lstm/gates/f": lambda step, value: value[0, :2]})


@pytest.mark.parametrize(
    "text,units,steps,value,scale",
    [
        ("lstm/gates/f[units=0:3]=1.0", slice(0, 3), None, 1.0, False),
        ("lstm/gates/c[units=1;steps=2:]=0", [1], slice(2, None), 0.0, False),
        ("lstm/gates/o[steps=0,4]*=0.5", None, [0, 4], 0.5, True),
        ("gru/gates/z = -2e-1", None, None, -0.2, False),
    ],
)
def test_the_command_line_edit_syntax_builds_the_ready_made_edits(text, units, steps, value, scale):
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    key, edit = parse_edit(text)
    expected = (tlp.scale_units if scale else tlp.set_units)(value, units=units, steps=steps)
    ours = tlp.intervene(model, x, {key: edit}, gates=True)
    theirs = tlp.intervene(model, x, {key: expected}, gates=True)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("text", ["lstm/gates/f", "lstm/gates/f[units=a]=1", "lstm/gates/f[cells=0]=1", "=1"])
def test_a_malformed_edit_is_a_clear_error(text):
    with pytest.raises(tlp.InputError, match="Edit"):
        parse_edit(text)


def test_probe_verb_with_edits_writes_the_edited_run(tmp_path, capsys):
    from safetensors import safe_open

    from torch_lstm_probe.cli import main

    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = np.asarray(golden_inputs(arrays)[0])
    np.save(tmp_path / "x.npy", x)
    model_file = GOLDENS / "keras_masked_lstm_gru.keras"
    edit = "lstm/gates/f[units=0:2]=1.0"
    out = tmp_path / "acts.safetensors"
    argv = ["probe", str(model_file), "--input", str(tmp_path / "x.npy"), "--gates", "--out", str(out)]
    assert main([*argv, "--edit", edit, "--edit", "gru/gates/h*=0.5"]) == 0
    model = tlp.load_keras(model_file)
    expected = tlp.intervene(model, x, dict([parse_edit(edit), parse_edit("gru/gates/h*=0.5")]), gates=True)
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["edits"]) == [edit, "gru/gates/h*=0.5"]
        assert torch.equal(f.get_tensor("lstm/gates/f"), expected["lstm/gates/f"])
        assert torch.equal(f.get_tensor("bidirectional/backward/gates/h"), expected["bidirectional/backward/gates/h"])
    assert main([*argv, "--edit", "lstm/gates/q=1"]) == 2
    err = capsys.readouterr().err
    assert "No gate 'lstm/gates/q'" in err and "Traceback" not in err


def _hook_point(model, key: str):
    """The hook point of a probe gate key, e.g. ``"bidirectional/backward/gates/c"``."""
    *where, _, gate = key.split("/")
    module = model.layer(where[0])
    if len(where) > 1:
        module = getattr(module, f"{where[1]}_layer")
    return getattr(module, f"hook_{gate}")


HOOK_CASES = [  # golden, gate key, the replacement built from the values the hook receives
    ("keras_masked_lstm_gru", "lstm/gates/f", lambda v: v * 0.5 + 0.25),
    ("keras_masked_lstm_gru", "lstm/gates/c", lambda v: torch.zeros_like(v)),
    ("keras_masked_lstm_gru", "gru/gates/z", lambda v: v.flip(1)),
    ("keras_masked_lstm_gru", "bidirectional/backward/gates/o", lambda v: 1 - v),
    ("keras_lstm_go_backwards", None, lambda v: v.clamp(max=0.5)),
    ("keras_simple_rnn", "simple_rnn/gates/h", lambda v: v.roll(1, dims=0)),
]


@pytest.mark.parametrize(
    "gate_path", ["loop", "fused"]
)  # gates before the replacement: step loop, or fused (as on GPU)
@pytest.mark.parametrize("name,key,replace", HOOK_CASES, ids=[f"{c[0]}-{c[1]}" for c in HOOK_CASES])
def test_a_gate_hook_that_returns_a_tensor_replaces_the_gate_like_the_equivalent_edit(name, key, replace, gate_path):
    arrays, _ = load_golden(name)
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / f"{name}.keras")
    for module in model.modules():
        if hasattr(module, "gate_path"):
            module.gate_path = gate_path
    key = key or f"{next(_cells(model))[0]}/gates/f"
    plain = tlp.probe(model, x, gates=True)
    received = []

    def hook(module, args, value):
        received.append(value)
        return replace(value)

    handle = _hook_point(model, key).register_forward_hook(hook)
    try:
        hooked = tlp.probe(model, x, gates=True)
    finally:
        handle.remove()
    assert len(received) == 1  # one call per layer call, with the whole (batch, time, units) gate
    torch.testing.assert_close(received[0], plain[key], rtol=0, atol=0)  # the values of the run before the edit
    replacement = replace(received[0])
    equivalent = tlp.intervene(model, x, {key: lambda t, v: replacement[:, t]}, gates=True)
    assert hooked.keys() == equivalent.keys()
    mask = hooked.get(f"{key.split('/')[0]}/mask")  # (N, L) in input order; gates run in processing order
    if mask is not None and "/backward/" in key:
        mask = mask.flip(1)
    for k in hooked:
        got, want = hooked[k], equivalent[k]
        if k == key and mask is not None:  # a hook that reads after this one sees what it returned
            got, want = got[mask], want[mask]  # masked steps read 0 in the edited run
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=k)
    final = [path for path, _ in model.iter_layers()][-1]
    assert not torch.allclose(hooked[final], plain[final])  # the replacement reached the model's output


def test_a_constant_hook_and_a_patching_hook_equal_the_ready_made_edits():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = np.asarray(golden_inputs(arrays)[0])
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    point = model.layer("lstm").hook_f
    handle = point.register_forward_hook(lambda m, a, v: torch.ones_like(v))
    try:
        hooked = tlp.probe(model, x)
    finally:
        handle.remove()
    clamped = tlp.intervene(model, x, {"lstm/gates/f": tlp.set_units(1.0)})
    torch.testing.assert_close(hooked, clamped, rtol=0, atol=0)
    source = np.roll(x, 1, axis=0)
    recorded = tlp.probe(model, source, gates=True)["lstm/gates/c"]  # (N, L, H)
    handle = model.layer("lstm").hook_c.register_forward_hook(lambda m, a, v: recorded)
    try:
        patched = tlp.probe(model, x, gates=True)
    finally:
        handle.remove()
    edited = tlp.intervene(model, x, {"lstm/gates/c": lambda t, v: recorded[:, t]}, gates=True)
    for key in ("lstm/gates/h", "gru", "bidirectional"):
        torch.testing.assert_close(patched[key], edited[key], rtol=0, atol=0, msg=key)
    mask = _np(edited["lstm/mask"]).astype(bool)
    ref = reference(model.layer("lstm"), _np(edited["embedding"]), mask, {"c": lambda t, v: _np(recorded)[:, t]})
    np.testing.assert_allclose(_np(edited["lstm/gates/h"]), ref["h"], atol=ATOL)


def test_hooks_on_other_gates_read_the_edited_run_and_bad_replacements_are_refused():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    lstm = model.layer("lstm")
    seen = {}
    handles = [
        lstm.hook_f.register_forward_hook(lambda m, a, v: torch.zeros_like(v)),
        lstm.hook_h.register_forward_hook(lambda m, a, v: seen.setdefault("h", []).append(v)),
    ]
    try:
        tlp.probe(model, x)
    finally:
        for handle in handles:
            handle.remove()
    edited = tlp.intervene(model, x, {"lstm/gates/f": tlp.set_units(0.0)}, gates=True)
    assert len(seen["h"]) == 2  # a reader fires again on the rerun that the replacement caused
    torch.testing.assert_close(seen["h"][-1], edited["lstm/gates/h"], rtol=0, atol=0)
    for bad, expected in [(lambda v: v[:, :2], r"returned \(\d+, 2, \d+\)"), (lambda v: 1.0, "returned float")]:
        handle = lstm.hook_f.register_forward_hook(lambda m, a, v, bad=bad: bad(v))
        try:
            with pytest.raises(tlp.InputError, match=rf"hook_f of .*{expected}.*Expected None .* or a tensor of shape"):
                tlp.probe(model, x)
        finally:
            handle.remove()


@pytest.mark.parametrize(
    "name,key", [("keras_masked_lstm_gru", "lstm/gates/f"), ("keras_masked_lstm_gru", "gru/gates/z")]
)
def test_gradients_with_respect_to_each_steps_gate_equal_finite_differences(name, key):
    arrays, _ = load_golden(name)
    x = golden_inputs(arrays)[0][:2]
    model = tlp.load_keras(GOLDENS / f"{name}.keras").double()
    values: list[torch.Tensor] = []

    def keep(step, value):  # an identity edit: each step's gate becomes a node of the output's graph
        values.append(value)
        return value

    out = tlp.intervene(model, x, {key: keep}, grad=True)
    final = list(out)[-1]
    grads = torch.autograd.grad(out[final].sum(), values, allow_unused=True)
    step, unit, eps = 3, 1, 1e-6

    def nudged(delta):
        def edit(t, value):
            if t != step:
                return value
            value = value.clone()
            value[:, unit] += delta
            return value

        with torch.no_grad():
            return tlp.intervene(model, x, {key: edit})[final].sum()

    numeric = (nudged(eps) - nudged(-eps)) / (2 * eps)
    analytic = grads[step][:, unit].sum() if grads[step] is not None else torch.zeros((), dtype=torch.float64)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_mean_ablation_uses_the_gate_statistics_and_zero_ablation_sets_zero():
    arrays, _ = load_golden("keras_masked_lstm_gru")
    x = golden_inputs(arrays)[0]
    model = tlp.load_keras(GOLDENS / "keras_masked_lstm_gru.keras")
    mean = tlp.gate_stats(model, x, progress=False)["lstm/gates/c"]["mean"]  # (units,)
    edited = tlp.intervene(model, x, {"lstm/gates/c": tlp.ablate_units(mean, units=[1, 3])}, gates=True)
    spec = ("set", [1, 3], None, _np(mean)[[1, 3]])
    ref = reference(
        model.layer("lstm"),
        _np(edited["embedding"]),
        _np(edited["lstm/mask"]).astype(bool),
        {"c": _edit(spec, for_numpy=True)},
    )
    np.testing.assert_allclose(_np(edited["lstm/gates/c"]), ref["c"], atol=ATOL)
    zero = tlp.intervene(model, x, {"lstm/gates/o": tlp.ablate_units(0.0, units=[0])}, gates=True)
    valid = _np(zero["lstm/mask"]).astype(bool)
    assert (_np(zero["lstm/gates/o"])[..., 0][valid] == 0).all()
