"""Captum's layer attribution methods on converted models: integrated gradients on any layer by its
Keras name (checked by the completeness axiom: attributions sum to F(x) - F(baseline)), and
per-step gate attributions through the gate hook points (checked against finite differences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

import torch_lstm_probe as tlp
from tests.test_goldens import GOLDENS, golden_inputs, load_golden

NAME = "keras_masked_lstm_gru"  # Embedding(mask_zero) -> LSTM -> GRU -> Bidirectional(LSTM), masks with gaps


@pytest.fixture(scope="module")
def model_and_tokens():
    arrays, _ = load_golden(NAME)
    tokens = torch.as_tensor(np.asarray(golden_inputs(arrays)[0]))  # (N, L) token ids, 0 = padding
    return tlp.load_keras(GOLDENS / f"{NAME}.keras"), tokens


def _score(model):
    return lambda tokens: model(tokens).sum(-1)  # one number per sentence


@pytest.mark.parametrize("layer", ["embedding", "lstm", "gru", "bidirectional"])
def test_layer_integrated_gradients_on_a_keras_layer_are_complete(model_and_tokens, layer):
    model, tokens = model_and_tokens
    baseline = torch.where(tokens > 0, torch.ones_like(tokens), tokens)  # token 1 at every real step, same mask
    method = LayerIntegratedGradients(_score(model), model.layer(layer))
    attr, delta = method.attribute(tokens, baselines=baseline, n_steps=64, return_convergence_delta=True)
    with torch.no_grad():
        gap = _score(model)(tokens) - _score(model)(baseline)  # (N,)
    total = attr.flatten(1).sum(1)
    assert torch.count_nonzero(gap) >= 3  # the check below is not trivially 0 = 0
    torch.testing.assert_close(total, gap.to(total.dtype), atol=1e-5, rtol=1e-3)
    assert float(delta.abs().max()) < 1e-5
    if layer == "embedding":  # padding steps are identical in input and baseline: no attribution
        assert torch.count_nonzero(attr[tokens == 0]) == 0


def test_gate_attributions_through_a_hook_point_equal_finite_differences(model_and_tokens):
    """Captum replaces the forget gate at its hook point: the gradient is the effect of one step's
    gate with the gate at every other step held at its value (the hook semantics), checked in float64."""
    model, tokens = model_and_tokens
    model = tlp.load_keras(GOLDENS / f"{NAME}.keras").double()
    point = model.layer("lstm").hook_f
    grads = LayerGradientXActivation(_score(model), point, multiply_by_inputs=False).attribute(tokens)
    forget = tlp.probe(model, tokens, gates=True)["lstm/gates/f"]  # (N, L, H)
    for row, step, unit in [(0, 1, 0), (2, 1, 1), (4, 5, 3), (1, 4, 2)]:
        eps = 1e-6
        moved = []
        for sign in (1, -1):
            nudged = forget.clone()
            nudged[row, step, unit] += sign * eps
            handle = point.register_forward_hook(lambda mod, args, value, nudged=nudged: nudged)
            try:
                with torch.no_grad():
                    moved.append(_score(model)(tokens)[row])
            finally:
                handle.remove()
        numeric = float(moved[0] - moved[1]) / (2 * eps)
        assert abs(float(grads[row, step, unit]) - numeric) < 1e-7, (row, step, unit)
        assert numeric != 0.0
