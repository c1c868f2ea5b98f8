"""GRU, SimpleRNN and Bidirectional runtime modules against the float64 step-by-step oracles.

Torch only (no Keras): every fast path (fused kernel, fused kernel on each row's real steps
moved to the front, exact step loop) must equal ``gru_reference`` / ``simple_rnn_reference``,
outputs, final states and gates alike, under every mask shape Keras allows.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from torch_lstm_probe.errors import InputError
from torch_lstm_probe.layers import GRU, Bidirectional, SimpleRNN, gru_reference, simple_rnn_reference
from torch_lstm_probe.layers.gru import GRUConfig
from torch_lstm_probe.layers.simple_rnn import SimpleRNNConfig

N, L, F_IN, H = 4, 6, 3, 5
ATOL64 = 1e-10  # float64 module vs float64 oracle: only summation order differs

# (id, module type, config overrides); the fused ones run on nn.GRU / nn.RNN.
CELLS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("gru_reset_after", "GRU", {"reset_after": True}, True),
    ("gru_reset_before", "GRU", {"reset_after": False}, False),
    ("gru_relu_hardsig", "GRU", {"activation": "relu", "recurrent_activation": "keras2_hard_sigmoid"}, False),
    ("gru_before_nobias", "GRU", {"reset_after": False, "use_bias": False}, False),
    ("gru_after_nobias", "GRU", {"use_bias": False}, True),
    ("rnn_tanh", "SimpleRNN", {"activation": "tanh"}, True),
    ("rnn_relu", "SimpleRNN", {"activation": "relu"}, True),
    ("rnn_elu", "SimpleRNN", {"activation": "elu"}, False),
]


def _mask(kind: str) -> torch.Tensor | None:
    """A (N, L) mask of the given shape; row patterns chosen so every row differs."""
    if kind == "none":
        return None
    m = torch.ones(N, L, dtype=torch.bool)
    if kind == "right":
        for row, length in enumerate((6, 4, 1, 3)):
            m[row, length:] = False
    elif kind == "left":
        for row, pad in enumerate((0, 2, 5, 1)):
            m[row, :pad] = False
    elif kind == "middle":  # padded on both sides: still one block per row
        m[0, :1] = False
        m[0, 4:] = False
        m[1, 3:] = False
        m[2, :2] = False
    elif kind == "holes":
        m[0, 1] = False
        m[1, [0, 2, 5]] = False
        m[3, 3:5] = False
    elif kind == "empty_rows":
        m[1] = False
        m[2, 4:] = False
        m[3] = False
    else:
        raise ValueError(kind)
    return m


MASKS = ("none", "right", "left", "middle", "holes", "empty_rows")


def _make(kind: str, overrides: dict[str, Any], seed: int = 0, **options: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    base: dict[str, Any] = {"input_size": F_IN, "hidden_size": H, **overrides, **options}
    module = GRU(GRUConfig(**base)) if kind == "GRU" else SimpleRNN(SimpleRNNConfig(**base))
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    return module.double().eval()


def _oracle(module: torch.nn.Module, x: torch.Tensor, h0: torch.Tensor | None, mask: torch.Tensor | None) -> Any:
    cfg = module.config
    bias_ih = getattr(module, "bias_ih_l0", None)
    bias_hh = getattr(module, "bias_hh_l0", None)
    if isinstance(module, GRU):
        return gru_reference(
            x,
            module.weight_ih_l0,
            module.weight_hh_l0,
            bias_ih,
            bias_hh,
            cfg.reset_after,
            cfg.activation,
            cfg.recurrent_activation,
            h0,
            mask,
            cfg.zero_output_for_mask,
        )
    bias = None if bias_ih is None else bias_ih + bias_hh
    return simple_rnn_reference(
        x, module.weight_ih_l0, module.weight_hh_l0, bias, cfg.activation, h0, mask, cfg.zero_output_for_mask
    )


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = ATOL64) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, L, F_IN, generator=g, dtype=torch.float64)
    h0 = 0.5 * torch.randn(N, H, generator=g, dtype=torch.float64)
    return x, h0


# ---------------------------------------------------------------------------- outputs and gates vs oracle


@pytest.mark.parametrize("variant", ["plain", "state_zero_out"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "back"])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("kind, overrides, fusable", [pytest.param(k, o, f, id=i) for i, k, o, f in CELLS])
def test_matches_oracle(kind, overrides, fusable, mask_kind, go_backwards, variant):
    with_state = variant == "state_zero_out"
    module = _make(
        kind,
        overrides,
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        zero_output_for_mask=with_state,
    )
    assert module._fusable == fusable
    x, h0 = _inputs()
    mask = _mask(mask_kind)
    init = [h0] if with_state else None
    xp = x.flip(1) if go_backwards else x
    mp = None if mask is None else (mask.flip(1) if go_backwards else mask)
    seq_ref, gates_ref = _oracle(module, xp, h0 if with_state else None, mp)

    with torch.no_grad():
        seq, h = module(x, initial_state=init, mask=mask)
    _close(seq, seq_ref, "sequence output (processing order)")
    _close(h, gates_ref.h[:, -1], "final state")

    for path in ("loop", "fused"):
        module.gate_path = path
        with torch.no_grad():
            (seq_g, h_g), gates = module(x, initial_state=init, mask=mask, return_gates=True)
        _close(seq_g, seq_ref, f"output with gates ({path})")
        _close(h_g, gates_ref.h[:, -1], f"final state with gates ({path})")
        assert type(gates) is type(gates_ref) and gates._fields == module.GATE_NAMES
        for name in gates._fields:
            _close(getattr(gates, name), getattr(gates_ref, name), f"gate {name} ({path})")


@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "back"])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("kind, overrides, fusable", [pytest.param(k, o, f, id=i) for i, k, o, f in CELLS])
def test_last_output(kind, overrides, fusable, mask_kind, go_backwards):
    """return_sequences=False gives the output at the last processed step (carried over masks)."""
    module = _make(kind, overrides, go_backwards=go_backwards)
    x, _ = _inputs(2)
    mask = _mask(mask_kind)
    xp = x.flip(1) if go_backwards else x
    mp = None if mask is None else (mask.flip(1) if go_backwards else mask)
    seq_ref, _ = _oracle(module, xp, None, mp)
    with torch.no_grad():
        last = module(x, mask=mask)
    _close(last, seq_ref[:, -1], "last output")


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("kind, overrides", [pytest.param(k, o, id=i) for i, k, o, f in CELLS if f])
def test_every_mask_runs_fused(kind, overrides, mask_kind):
    """Masks of every kind (holes and fully masked rows included) never fall back to the step loop
    on fusable layers (gates included when gate_path is "fused"); their values are checked
    against the references above."""
    module = _make(kind, overrides, return_sequences=True)
    module.gate_path = "fused"

    def no_loop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the step loop ran")

    module._step_loop = no_loop
    x, _ = _inputs(3)
    with torch.no_grad():
        module(x, mask=_mask(mask_kind))
        module(x, mask=_mask(mask_kind), return_gates=True)


# ---------------------------------------------------------------------------- hooks, probing helpers


@pytest.mark.parametrize("path", ["loop", "fused"])
def test_gate_hooks_fire_once_with_gates(path):
    module = _make("GRU", {}, return_sequences=True)
    module.gate_path = path
    seen: dict[str, torch.Tensor] = {}
    handles = [
        getattr(module, f"hook_{g}").register_forward_hook(lambda m, a, out, g=g: seen.__setitem__(g, out))
        for g in module.GATE_NAMES
    ] + [module.hook_mask.register_forward_hook(lambda m, a, out: seen.__setitem__("mask", out))]
    try:
        x, _ = _inputs()
        mask = _mask("left")
        with torch.no_grad():
            plain = module(x, mask=mask)
        _, gates = module(x, mask=mask, return_gates=True)
    finally:
        for handle in handles:
            handle.remove()
    assert set(seen) == {"z", "r", "n", "h", "mask"}
    assert torch.equal(seen["mask"], mask)
    for g in module.GATE_NAMES:
        _close(seen[g], getattr(gates, g), f"hooked gate {g}")
    with torch.no_grad():
        _close(module(x, mask=mask), plain, "output without hooks")


def test_gate_points():
    gru = _make("GRU", {})
    assert [k for k, _ in gru.gate_points()] == ["/gates/z", "/gates/r", "/gates/n", "/gates/h", "/mask"]
    rnn = _make("SimpleRNN", {})
    assert [k for k, _ in rnn.gate_points()] == ["/gates/h", "/mask"]
    assert rnn.gate_points()[0][1] is rnn.hook_h


# ---------------------------------------------------------------------------- Keras features


@pytest.mark.parametrize("kind, overrides", [("GRU", {}), ("GRU", {"reset_after": False}), ("SimpleRNN", {})])
def test_time_major(kind, overrides):
    batch_first = _make(kind, overrides, return_sequences=True)
    time_major = _make(kind, overrides, return_sequences=True, time_major=True)
    x, _ = _inputs()
    mask = _mask("right")
    with torch.no_grad():
        expected = batch_first(x, mask=mask)
        got = time_major(x.transpose(0, 1), mask=mask.t())
    _close(got, expected.transpose(0, 1), "time-major sequence")


@pytest.mark.parametrize("kind, overrides", [("GRU", {}), ("SimpleRNN", {"activation": "linear"})])
def test_stateful_carries_until_reset(kind, overrides):
    module = _make(kind, overrides, stateful=True, batch_size=N, return_sequences=True)
    reference = _make(kind, overrides, return_sequences=True)
    x, _ = _inputs()
    with torch.no_grad():
        first = module(x[:, :3])
        second = module(x[:, 3:])
        whole = reference(x)
        _close(torch.cat([first, second], 1), whole, "two stateful calls = one call")
        module.reset_states()
        _close(module(x[:, :3]), whole[:, :3], "after reset_states")
    with pytest.raises(InputError, match="stateful with a batch size fixed at 4"):
        module(x[:2])


def test_initial_state_validation():
    module = _make("GRU", {})
    x, h0 = _inputs()
    with torch.no_grad():
        _close(module(x, initial_state=h0), module(x, initial_state=[h0]), "tensor or [tensor]")
    with pytest.raises(InputError, match=r"takes initial_state=\[h\]\. Received 2"):
        module(x, initial_state=[h0, h0])
    with pytest.raises(InputError, match=r"initial state h has shape \(4, 4\)"):
        module(x, initial_state=[h0[:, :4]])
    with pytest.raises(InputError, match="mask has shape"):
        module(x, mask=torch.ones(N, L + 1, dtype=torch.bool))


def test_compute_mask():
    seq = _make("GRU", {}, return_sequences=True, return_state=True)
    last = _make("SimpleRNN", {})
    mask = _mask("right")
    assert seq.compute_mask(None, mask)[0] is mask and seq.compute_mask(None, mask)[1] is None
    assert last.compute_mask(None, mask) is None


def test_float32_matches_float64_oracle():
    module = _make("GRU", {"reset_after": False}, return_sequences=True).float()
    x, _ = _inputs()
    mask = _mask("holes")
    with torch.no_grad():
        got = module(x.float(), mask=mask)
    ref, _ = _oracle(module.double(), x, None, mask)
    _close(got.double(), ref, "float32 vs float64 oracle", atol=1e-5)


def test_config_round_trip():
    module = _make("GRU", {"reset_after": False, "activation": "relu"}, go_backwards=True)
    rebuilt = GRU.from_config(module.get_config())
    assert rebuilt.config == module.config
    assert "reset_after=False" in repr(module)


# ---------------------------------------------------------------------------- Bidirectional


def _bidirectional(merge_mode: str | None, return_sequences: bool, return_state: bool = False) -> Bidirectional:
    options = {
        "return_sequences": return_sequences,
        "return_state": return_state,
        "zero_output_for_mask": return_sequences,
    }
    fwd = _make("GRU", {}, seed=3, **options)
    bwd = _make("GRU", {"reset_after": False, "hidden_size": 2}, seed=4, go_backwards=True, **options)
    config = {
        "forward_layer": {"type": "GRU", "config": fwd.get_config()},
        "backward_layer": {"type": "GRU", "config": bwd.get_config()},
        "merge_mode": merge_mode,
    }
    bi = Bidirectional.from_config(config)
    bi.load_state_dict(
        {
            **{f"forward_layer.{k}": v for k, v in fwd.state_dict().items()},
            **{f"backward_layer.{k}": v for k, v in bwd.state_dict().items()},
        }
    )
    return bi.double().eval()


@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("mask_kind", ["none", "left", "holes"])
def test_bidirectional_halves_and_gates(mask_kind, return_sequences):
    bi = _bidirectional(None, return_sequences, return_state=True)
    x, _ = _inputs()
    mask = _mask(mask_kind)
    with torch.no_grad():
        (y, y_rev, h_f, h_b), gates = bi(x, mask=mask, return_gates=True)
    fwd_seq, fwd_gates = _oracle(bi.forward_layer, x, None, mask)
    bwd_seq, bwd_gates = _oracle(bi.backward_layer, x.flip(1), None, None if mask is None else mask.flip(1))
    if return_sequences:
        _close(y, fwd_seq, "forward sequence")
        _close(y_rev, bwd_seq.flip(1), "backward sequence, back in input order")
    else:
        _close(y, fwd_seq[:, -1], "forward last")
        _close(y_rev, bwd_seq[:, -1], "backward last = its final output")
    _close(h_f, fwd_gates.h[:, -1], "forward state")
    _close(h_b, bwd_gates.h[:, -1], "backward state")
    _close(gates.backward.z, bwd_gates.z, "backward gates in processing (reversed) order")
    _close(gates.forward.h, fwd_gates.h, "forward gates")


def test_bidirectional_merge_modes():
    x, _ = _inputs()
    with torch.no_grad():
        y, y_rev = _bidirectional(None, True)(x)
        _close(_bidirectional("concat", True)(x), torch.cat([y, y_rev], -1), "concat")
    # equal widths are needed for sum/ave/mul: use identical halves
    fwd = _make("SimpleRNN", {}, return_sequences=True, zero_output_for_mask=True)
    bwd = _make("SimpleRNN", {}, seed=5, return_sequences=True, zero_output_for_mask=True, go_backwards=True)
    expected = {"sum": lambda a, b: a + b, "ave": lambda a, b: (a + b) / 2, "mul": lambda a, b: a * b}
    with torch.no_grad():
        a, b = fwd(x), bwd(x).flip(1)
        for mode, fn in expected.items():
            bi = Bidirectional(
                Bidirectional.Config(
                    {"type": "SimpleRNN", "config": fwd.get_config()},
                    {"type": "SimpleRNN", "config": bwd.get_config()},
                    mode,
                ),
                fwd,
                bwd,
            )
            _close(bi(x), fn(a, b), mode)


def test_bidirectional_gate_points_and_mask_hook():
    bi = _bidirectional("concat", True)
    keys = [k for k, _ in bi.gate_points()]
    assert keys == [f"/forward/gates/{g}" for g in "zrnh"] + [f"/backward/gates/{g}" for g in "zrnh"] + ["/mask"]
    assert dict(bi.gate_points())["/backward/gates/n"] is bi.backward_layer.hook_n
    seen = []
    handle = bi.hook_mask.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        mask = _mask("right")
        with torch.no_grad():
            bi(_inputs()[0], mask=mask)
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], mask)
    assert bi.compute_mask(None, mask) is mask


def test_bidirectional_initial_state_split():
    bi = _bidirectional("concat", False, return_state=True)
    x, h0 = _inputs()
    h0_b = h0[:, :2]
    with torch.no_grad():
        out, h_f, h_b = bi(x, initial_state=[h0, h0_b])
        fwd_seq, _ = _oracle(bi.forward_layer, x, h0, None)
        bwd_seq, _ = _oracle(bi.backward_layer, x.flip(1), h0_b, None)
    _close(out, torch.cat([fwd_seq[:, -1], bwd_seq[:, -1]], -1), "merged last outputs")
    with pytest.raises(InputError, match="takes initial_state"):
        bi(x, initial_state=[h0])


def test_bidirectional_config_round_trip():
    bi = _bidirectional("ave", True)
    rebuilt = Bidirectional.from_config(bi.get_config())
    assert rebuilt.get_config() == bi.get_config()


# ---------------------------------------------------------------------------- converters (no Keras needed)


def _ctx() -> Any:
    from torch_lstm_probe.converters.common import Context
    from torch_lstm_probe.converters.spec import KerasVersion

    return Context(source="model.h5", keras_version=KerasVersion(2, 15, 0), library="tf_keras")


def _gru_spec(units: int = 2, features: int = 3, **config: Any) -> Any:
    import numpy as np
    from torch_lstm_probe.converters.spec import LayerSpec

    rng = np.random.default_rng(0)
    reset_after = config.get("reset_after", True)
    bias_shape = (2, 3 * units) if reset_after else (3 * units,)
    weights = (
        rng.standard_normal((features, 3 * units)).astype(np.float32),
        rng.standard_normal((units, 3 * units)).astype(np.float32),
        rng.standard_normal(bias_shape).astype(np.float32),
    )
    return LayerSpec(name="gru", class_name="GRU", config={"units": units, **config}, weights=weights)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_converter_layout(reset_after):
    """The converted module equals the Keras formula written with Keras' own [z, r, h] layout."""
    from torch_lstm_probe.converters.build import instantiate
    from torch_lstm_probe.converters.gru import convert_gru

    spec = _gru_spec(reset_after=reset_after, return_sequences=True)
    module = instantiate(convert_gru(spec, _ctx())).double()
    kernel, recurrent, bias = (torch.from_numpy(w).double() for w in spec.weights)
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, torch.zeros_like(bias))
    x, _ = _inputs()
    x = x[..., :3]
    h = torch.zeros(N, 2, dtype=torch.float64)
    u = 2
    for t in range(L):
        xk = x[:, t] @ kernel + b_in  # (N, 3u) as [z, r, h]
        hk = h @ recurrent + b_rec
        z = torch.sigmoid(xk[:, :u] + hk[:, :u])
        r = torch.sigmoid(xk[:, u : 2 * u] + hk[:, u : 2 * u])
        if reset_after:
            cand = torch.tanh(xk[:, 2 * u :] + r * hk[:, 2 * u :])
        else:
            cand = torch.tanh(xk[:, 2 * u :] + (r * h) @ recurrent[:, 2 * u :])
        h = z * h + (1 - z) * cand
    with torch.no_grad():
        _close(module(x)[:, -1], h, "converted GRU vs the Keras formula", atol=1e-9)


def test_gru_converter_errors():
    from torch_lstm_probe.converters.gru import convert_gru
    from torch_lstm_probe.converters.spec import LayerSpec

    from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError

    spec = _gru_spec(reset_after=True)
    wrong = LayerSpec(name="gru", class_name="GRU", config={"units": 2, "reset_after": False}, weights=spec.weights)
    with pytest.raises(WeightMismatchError, match=r"bias'? has shape \(2, 6\)"):
        convert_gru(wrong, _ctx())
    with pytest.raises(UnsupportedOptionError, match=r"config key\(s\) \['mystery'\]"):
        convert_gru(_gru_spec(mystery=1), _ctx())
    legacy = LayerSpec(name="gru", class_name="GRU", config={"units": 2}, weights=_gru_spec(reset_after=False).weights)
    assert convert_gru(legacy, _ctx()).config.reset_after is False  # no key: the bias shape decides


def test_bidirectional_converter():
    from torch_lstm_probe.converters.bidirectional import convert_bidirectional
    from torch_lstm_probe.converters.build import instantiate
    from torch_lstm_probe.converters.spec import LayerSpec

    from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError

    fwd = _gru_spec(return_sequences=True)
    bwd = _gru_spec(units=2, return_sequences=True, go_backwards=True, reset_after=False, activation="relu")
    inner = {"class_name": "GRU", "config": {"units": 2, "return_sequences": True, "name": "gru"}}
    config = {"layer": inner, "merge_mode": "ave", "backward_layer": {"class_name": "GRU", "config": dict(bwd.config)}}
    spec = LayerSpec(name="bi", class_name="Bidirectional", config=config, weights=fwd.weights + bwd.weights)
    converted = convert_bidirectional(spec, _ctx())
    module = instantiate(converted)
    assert module.forward_layer.config.zero_output_for_mask and module.backward_layer.config.zero_output_for_mask
    assert module.backward_layer.config.reset_after is False and module.backward_layer.config.activation == "relu"
    default = LayerSpec(name="bi", class_name="Bidirectional", config={"layer": inner}, weights=fwd.weights * 2)
    back = instantiate(convert_bidirectional(default, _ctx())).backward_layer
    assert back.config.go_backwards and back.config.reset_after
    odd = LayerSpec(
        name="bi", class_name="Bidirectional", config={"layer": inner}, weights=fwd.weights[:2] + fwd.weights
    )
    with pytest.raises(WeightMismatchError, match="Expected an even number"):
        convert_bidirectional(odd, _ctx())
    same = {**config, "backward_layer": inner}
    with pytest.raises(UnsupportedOptionError, match="same go_backwards"):
        convert_bidirectional(
            LayerSpec(name="bi", class_name="Bidirectional", config=same, weights=spec.weights), _ctx()
        )
    with pytest.raises(UnsupportedOptionError, match="'merge_mode' is 'max'"):
        convert_bidirectional(
            LayerSpec(name="bi", class_name="Bidirectional", config={**config, "merge_mode": "max"}), _ctx()
        )


# ---------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("mask_kind", ["none", "left", "holes"])
@pytest.mark.parametrize("kind, overrides", [("GRU", {}), ("GRU", {"reset_after": False}), ("SimpleRNN", {})])
def test_cuda_matches_oracle(kind, overrides, mask_kind):
    """On CUDA gates come from the fused kernel ("auto"); float64 keeps the comparison tight."""
    module = _make(kind, overrides, return_sequences=True, go_backwards=True)
    x, _ = _inputs()
    mask = _mask(mask_kind)
    mp = None if mask is None else mask.flip(1)
    seq_ref, gates_ref = _oracle(module, x.flip(1), None, mp)
    cuda = module.cuda()
    with torch.no_grad():
        seq, gates = cuda(x.cuda(), mask=None if mask is None else mask.cuda(), return_gates=True)
    _close(seq.cpu(), seq_ref, "sequence on CUDA", atol=1e-8)
    for name in gates._fields:
        _close(getattr(gates, name).cpu(), getattr(gates_ref, name), f"gate {name} on CUDA", atol=1e-8)
