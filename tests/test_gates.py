"""LSTM gates: probe keys, hook points, fast paths vs oracles, and Keras-verified references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_close, keras_layer_outputs, randomize_biases, save, seed
from tests.reference import lstm_np
from torch_lstm_probe.layers.lstm import LSTM, LSTMConfig, lstm_reference

GOLDENS = Path(__file__).parent / "goldens"
GATES = ("i", "f", "g", "o", "c", "h")


# ---------------------------------------------------------------- torch-only
def _module(**kw) -> LSTM:
    torch.manual_seed(0)
    cfg = LSTMConfig(input_size=5, hidden_size=4, return_sequences=True, return_state=True, **kw)
    m = LSTM(cfg).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.4, 0.4)
    return m


MASKS = {
    "none": None,
    "right": [[1] * 9, [1] * 6 + [0] * 3, [1] * 2 + [0] * 7, [0] * 9],
    "left": [[1] * 9, [0] * 3 + [1] * 6, [0] * 8 + [1], [0] * 9],
    "holes": [[1, 0, 1, 1, 0, 0, 1, 1, 1], [1] * 9, [0, 1, 0, 1, 0, 1, 0, 1, 0], [1] * 3 + [0] * 3 + [1] * 3],
}


@pytest.mark.parametrize("path", ["loop", "fused"])
@pytest.mark.parametrize("mask_kind", sorted(MASKS))
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
def test_gate_paths_equal_the_oracle(path, mask_kind, go_backwards, zero_output):
    m = _module(go_backwards=go_backwards, zero_output_for_mask=zero_output)
    m.gate_path = path
    x = torch.randn(4, 9, 5, dtype=torch.float64)
    h0, c0 = torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    mask = None if MASKS[mask_kind] is None else torch.tensor(MASKS[mask_kind], dtype=torch.bool)
    with torch.inference_mode():
        (seq, h, c), gates = m(x, initial_state=[h0, c0], mask=mask, return_gates=True)
        plain_seq, plain_h, plain_c = m(x, initial_state=[h0, c0], mask=mask)
    xr, mr = (x.flip(1), None if mask is None else mask.flip(1)) if go_backwards else (x, mask)
    ref_seq, ref = lstm_reference(
        xr,
        m.weight_ih_l0,
        m.weight_hh_l0,
        m.bias_ih_l0 + m.bias_hh_l0,
        h0=h0,
        c0=c0,
        mask=mr,
        zero_output_for_mask=zero_output,
    )
    for name in GATES:
        assert_close(getattr(gates, name), getattr(ref, name), 1e-12, f"gate {name}")
    for value in (seq, plain_seq):
        assert_close(value, ref_seq, 1e-12, "sequence output")
    assert_close(h, ref.h[:, -1], 1e-12, "h")
    assert_close(c, ref.c[:, -1], 1e-12, "c")
    assert_close(plain_h, ref.h[:, -1], 1e-12, "h plain")


def test_hook_point_fires_once_per_call_with_batch_time_units():
    model = tlp.load_keras(GOLDENS / "keras_lstm_u16_stacked.keras")
    seen = []
    handle = model.layer("lstm").hook_f.register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        model(np.zeros((2, 7, 5), np.float32))
    finally:
        handle.remove()
    assert len(seen) == 1 and tuple(seen[0].shape) == (2, 7, 16)
    assert ((seen[0] > 0) & (seen[0] < 1)).all()


def test_no_gates_computed_without_hooks(monkeypatch):
    model = tlp.load_keras(GOLDENS / "keras_lstm_u16_stacked.keras")

    def forbidden(*args, **kwargs):
        raise AssertionError("gates were computed although nobody asked")

    for name in ("_time_major_loop", "_step_loop", "_gates_from_outputs"):
        monkeypatch.setattr(LSTM, name, forbidden)
    with torch.inference_mode():
        model(np.zeros((2, 7, 5), np.float32))


def test_probe_gate_keys_and_shapes():
    model = tlp.load_keras(GOLDENS / "keras_lstm_return_state.keras")
    acts = tlp.probe(model, np.random.default_rng(0).standard_normal((3, 7, 5)).astype(np.float32), gates=True)
    for layer in ("enc", "enc2"):
        for g in GATES:
            assert tuple(acts[f"{layer}/gates/{g}"].shape) == (3, 7, 3)
    # h gate is the sequence output; the final c is return_state's c.
    assert_close(acts["enc/gates/h"], acts["enc:0"], 1e-6, "h vs output")
    assert_close(acts["enc/gates/c"][:, -1], acts["enc:2"], 1e-6, "c vs state")


def test_probe_returns_applied_mask():
    model = tlp.load_keras(GOLDENS / "keras_embedding_classifier.keras")
    x = np.array([[3, 4, 0, 0, 0, 0]])
    with pytest.raises(tlp.ProbeKeyError):
        tlp.probe(model, x, layers=["lstm/mask"])  # no mask in this model


def test_gradients_in_eval_mode_wrt_inputs_and_embeddings():
    model = tlp.load_keras(GOLDENS / "keras_embedding_classifier.keras").eval()
    x = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 1, 2, 3]])
    acts = tlp.probe(model, x, layers=["embedding", "activation"], grad=True)
    emb, out = acts["embedding"], acts["activation"]
    assert emb.requires_grad and out.requires_grad
    (grad,) = torch.autograd.grad(out[:, 0].sum(), emb)
    assert grad.shape == emb.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    float_model = tlp.load_keras(GOLDENS / "keras_lstm_u16_stacked.keras").eval()
    xf = torch.randn(2, 7, 5, requires_grad=True)
    float_model(xf).sum().backward()
    assert xf.grad is not None and xf.grad.abs().sum() > 0


GRADIENT_CASES = ["keras_lstm_u16_stacked", "keras_gru_reset_after", "tf_keras_simple_rnn", "keras_bidirectional"]


def _gradient_check(case: str, device: str) -> None:
    from safetensors.numpy import load_file

    model = tlp.load_keras(GOLDENS / f"{case}.keras", device=device).eval()
    x = torch.from_numpy(load_file(str(GOLDENS / f"{case}.safetensors"))["input:0"]).to(device).requires_grad_(True)
    out = model(x)
    (out[0] if isinstance(out, list) else out).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_gradients_in_eval_mode_every_recurrent_class(case):
    _gradient_check(case, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_gradients_in_eval_mode_on_cuda(case):
    _gradient_check(case, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["keras_lstm_u16_stacked", "tf_keras_lstm_go_backwards", "keras_lstm_hard_sigmoid"])
def test_gates_on_cuda_equal_cpu(case):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x = np.random.default_rng(0).standard_normal((3, 7, 5)).astype(np.float32)
    cpu = tlp.probe(tlp.load_keras(GOLDENS / f"{case}.keras"), x, gates=True)
    gpu = tlp.probe(tlp.load_keras(GOLDENS / f"{case}.keras", device="cuda"), x, gates=True)
    for key, value in cpu.items():
        assert_close(gpu[key], value, ATOL["gpu_float32"], key)


# ---------------------------------------------------------------- against Keras (live)
def _gates_vs_reference(klib, keras_model, tlp_model, inputs, layer_names, masks=None, states=None):
    """Checks each reference's h/c against Keras, then tlp's gates against the reference."""
    keras_acts = keras_layer_outputs(klib, keras_model, inputs)
    acts = tlp.probe(tlp_model, inputs[0] if len(inputs) == 1 else inputs, gates=True)
    major = 3 if klib.__name__ == "keras" else 2
    for name in layer_names:
        layer = keras_model.get_layer(name)
        cfg = layer.get_config()
        weights = layer.get_weights()
        layer_input = _layer_input(klib, keras_model, layer, inputs)
        h0, c0 = (states or {}).get(name, (None, None))
        ref = lstm_np(
            layer_input,
            weights[0],
            weights[1],
            weights[2] if cfg["use_bias"] else None,
            cfg["activation"],
            cfg["recurrent_activation"],
            major,
            mask=(masks or {}).get(name),
            go_backwards=cfg["go_backwards"],
            h0=h0,
            c0=c0,
        )
        keras_out = keras_acts.get(name, keras_acts.get(f"{name}:0"))
        expected = ref["seq"] if cfg["return_sequences"] else ref["seq"][:, -1]
        assert_close(expected, keras_out, ATOL["cpu_float32"], f"reference vs Keras, {name}")
        if cfg["return_state"]:
            assert_close(ref["h_final"], keras_acts[f"{name}:1"], ATOL["cpu_float32"], f"reference h vs Keras, {name}")
            assert_close(ref["c_final"], keras_acts[f"{name}:2"], ATOL["cpu_float32"], f"reference c vs Keras, {name}")
        for g in GATES:
            assert_close(acts[f"{name}/gates/{g}"], ref[g], ATOL["cpu_float32"], f"{name} gate {g}")


def _layer_input(klib, model, layer, inputs):
    inbound = layer.input
    if isinstance(inbound, (list, tuple)):  # Keras 3 lists the mask (and states) after the input
        inbound = inbound[0]
    sub = klib.Model(model.inputs, inbound)
    return np.asarray(sub(inputs[0] if len(inputs) == 1 else inputs, training=False))


@pytest.mark.keras
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid"])
def test_gates_match_keras_verified_reference_stacked(klib, tmp_path, go_backwards, recurrent_activation):
    seed(klib)
    L = klib.layers
    model = klib.Sequential(
        [
            L.InputLayer(input_shape=(7, 5)) if klib.__name__ == "tf_keras" else klib.Input((7, 5)),
            L.LSTM(
                6,
                return_sequences=True,
                go_backwards=go_backwards,
                recurrent_activation=recurrent_activation,
                name="l1",
            ),
            L.LSTM(4, return_sequences=False, name="l2"),
        ]
    )
    randomize_biases(model, np.random.default_rng(0))
    x = (np.random.default_rng(1).standard_normal((3, 7, 5)) * 2).astype(np.float32)
    converted = tlp.load_keras(save(model, tmp_path, "keras" if klib.__name__ == "keras" else "h5"))
    _gates_vs_reference(klib, model, converted, [x], ["l1", "l2"])


@pytest.mark.keras
def test_gates_match_keras_with_masks(klib, tmp_path):
    seed(klib)
    L = klib.layers
    inp = klib.Input((8,), dtype="int32")
    e = L.Embedding(20, 5, mask_zero=True, name="emb")(inp)
    y = L.LSTM(4, return_sequences=True, name="l1")(e)
    y = L.LSTM(3, go_backwards=True, return_state=True, name="l2")(y)
    model = klib.Model(inp, y)
    randomize_biases(model, np.random.default_rng(0))
    x = np.random.default_rng(2).integers(1, 20, (5, 8)).astype(np.int32)
    x[1, 5:] = 0  # right padding
    x[2, :3] = 0  # left padding
    x[3, 2:4] = 0  # a hole
    x[4] = 0  # fully masked
    mask = x != 0
    converted = tlp.load_keras(save(model, tmp_path, "keras" if klib.__name__ == "keras" else "h5"))
    _gates_vs_reference(klib, model, converted, [x], ["l1", "l2"], masks={"l1": mask, "l2": mask})
    acts = tlp.probe(converted, x, layers=["l1"], gates=True)
    assert torch.equal(acts["l1/mask"], torch.from_numpy(mask))


@pytest.mark.keras
def test_gates_start_from_initial_state(klib, tmp_path):
    seed(klib)
    L = klib.layers
    inp = klib.Input((6, 3))
    _, h, c = L.LSTM(4, return_state=True, name="enc")(inp)
    dec = L.LSTM(4, return_sequences=True, name="dec")(inp, initial_state=[h, c])
    model = klib.Model(inp, dec)
    randomize_biases(model, np.random.default_rng(0))
    x = np.random.default_rng(3).standard_normal((2, 6, 3)).astype(np.float32)
    keras_acts = keras_layer_outputs(klib, model, [x])
    converted = tlp.load_keras(save(model, tmp_path, "h5"))
    states = {"dec": (keras_acts["enc:1"], keras_acts["enc:2"])}
    _gates_vs_reference(klib, model, converted, [x], ["enc", "dec"], states=states)


@pytest.mark.keras
def test_stateful_gates_start_from_carried_state(klib, tmp_path):
    seed(klib)
    L = klib.layers
    first = (
        L.InputLayer(batch_input_shape=(2, 5, 3)) if klib.__name__ == "tf_keras" else klib.Input(batch_shape=(2, 5, 3))
    )
    model = klib.Sequential([first, L.LSTM(4, stateful=True, return_sequences=True, name="s")])
    randomize_biases(model, np.random.default_rng(0))
    x1, x2 = (np.random.default_rng(k).standard_normal((2, 5, 3)).astype(np.float32) for k in (4, 5))
    converted = tlp.load_keras(save(model, tmp_path, "keras" if klib.__name__ == "keras" else "h5"))
    k1, k2 = np.asarray(model(x1)), np.asarray(model(x2))
    a1 = tlp.probe(converted, x1, gates=True)
    a2 = tlp.probe(converted, x2, gates=True)
    assert_close(a1["s"], k1, ATOL["cpu_float32"], "call 1")
    assert_close(a2["s"], k2, ATOL["cpu_float32"], "call 2 (carried state)")
    w = model.layers[-1].get_weights()
    ref1 = lstm_np(x1, *w)
    ref2 = lstm_np(x2, *w, h0=ref1["h_final"], c0=ref1["c_final"])
    assert_close(ref2["seq"], k2, ATOL["cpu_float32"], "reference vs Keras, call 2")
    for g in GATES:
        assert_close(a2[f"s/gates/{g}"], ref2[g], ATOL["cpu_float32"], f"gate {g}")
    converted.reset_states()
    assert_close(tlp.probe(converted, x1)["s"], k1, ATOL["cpu_float32"], "after reset_states")
    with pytest.raises(tlp.InputError, match="batch size fixed at 2"):
        converted(np.zeros((3, 5, 3), np.float32))


@pytest.mark.parametrize("mask_kind", ["right", "left", "holes"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("path", ["loop", "fused"])
def test_masked_without_return_state_equals_oracle(mask_kind, return_sequences, path):
    """Without return_state the fused kernel runs unpacked on the shifted rows."""
    torch.manual_seed(1)
    m = LSTM(LSTMConfig(input_size=5, hidden_size=4, return_sequences=return_sequences)).double().eval()
    m.gate_path = path
    x = torch.randn(4, 9, 5, dtype=torch.float64)
    mask = torch.tensor(MASKS[mask_kind], dtype=torch.bool)
    with torch.inference_mode():
        out = m(x, mask=mask)
        out_g, gates = m(x, mask=mask, return_gates=True)
    ref_seq, ref = lstm_reference(x, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0 + m.bias_hh_l0, mask=mask)
    expected = ref_seq if return_sequences else ref_seq[:, -1]
    assert_close(out, expected, 1e-12, "output")
    assert_close(out_g, expected, 1e-12, "output with gates")
    for name in GATES:
        assert_close(getattr(gates, name), getattr(ref, name), 1e-12, f"gate {name}")


@pytest.mark.keras
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_gates_match_keras_verified_reference(klib, tmp_path, return_sequences):
    """Both halves' gates against float64 references whose outputs equal Keras' halves."""
    seed(klib)
    L = klib.layers
    inp = klib.Input((8,), dtype="int32")
    e = L.Embedding(20, 5, mask_zero=True, name="emb")(inp)
    bi = L.Bidirectional(L.LSTM(3, return_sequences=return_sequences), merge_mode=None, name="bi")
    fwd_out, bwd_out = bi(e)
    model = klib.Model(inp, [fwd_out, bwd_out])
    randomize_biases(model, np.random.default_rng(0))
    x = np.random.default_rng(2).integers(1, 20, (4, 8)).astype(np.int32)
    x[1, 5:] = 0
    x[2, :3] = 0
    x[3, 2:4] = 0
    mask = x != 0
    emb = np.asarray(klib.Model(inp, e)(x))
    kf, kb = (np.asarray(v) for v in model(x))
    w = model.get_layer("bi").get_weights()
    ref_f = lstm_np(emb, *w[:3], mask=mask, zero_output_for_mask=return_sequences)
    ref_b = lstm_np(emb, *w[3:], mask=mask, go_backwards=True, zero_output_for_mask=return_sequences)
    if return_sequences:
        assert_close(ref_f["seq"], kf, ATOL["cpu_float32"], "forward reference vs Keras")
        assert_close(ref_b["seq"][:, ::-1], kb, ATOL["cpu_float32"], "backward reference vs Keras (flipped back)")
    else:
        assert_close(ref_f["h_final"], kf, ATOL["cpu_float32"], "forward reference vs Keras")
        assert_close(ref_b["h_final"], kb, ATOL["cpu_float32"], "backward reference vs Keras")
    converted = tlp.load_keras(save(model, tmp_path, "keras" if klib.__name__ == "keras" else "h5"))
    acts = tlp.probe(converted, x, layers=["bi"], gates=True)
    for g in GATES:
        assert_close(acts[f"bi/forward/gates/{g}"], ref_f[g], ATOL["cpu_float32"], f"forward gate {g}")
        assert_close(acts[f"bi/backward/gates/{g}"], ref_b[g], ATOL["cpu_float32"], f"backward gate {g}")
    assert torch.equal(acts["bi/mask"], torch.from_numpy(mask))


@pytest.mark.keras
def test_shared_layer_gates_match_keras_verified_reference(klib, tmp_path):
    seed(klib)
    L = klib.layers
    a, b = klib.Input((6, 3), name="a"), klib.Input((6, 3), name="b")
    shared = L.LSTM(4, return_sequences=True, name="shared")
    model = klib.Model([a, b], [shared(a), shared(b)])
    randomize_biases(model, np.random.default_rng(0))
    xs = [np.random.default_rng(k).standard_normal((2, 6, 3)).astype(np.float32) for k in (1, 2)]
    outs = [np.asarray(v) for v in model(xs)]
    w = model.get_layer("shared").get_weights()
    acts = tlp.probe(tlp.load_keras(save(model, tmp_path, "h5")), xs, gates=True)
    for n, (x, out) in enumerate(zip(xs, outs)):
        ref = lstm_np(x, *w)
        assert_close(ref["seq"], out, ATOL["cpu_float32"], f"reference vs Keras, call {n}")
        for g in GATES:
            assert_close(acts[f"shared@{n}/gates/{g}"], ref[g], ATOL["cpu_float32"], f"call {n} gate {g}")


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 13])
def test_the_parallel_scan_of_the_cell_recurrence_equals_the_step_loop(steps):
    from torch_lstm_probe.layers.lstm import _cell_loop, affine_scan

    torch.manual_seed(steps)
    f, ig = torch.rand(3, steps, 4, dtype=torch.float64), torch.randn(3, steps, 4, dtype=torch.float64)
    c0 = torch.randn(3, 4, dtype=torch.float64)
    assert_close(affine_scan(f, ig, c0), _cell_loop(f, ig, c0), 1e-12, "c")
