"""Capture plans: keys (``@n`` for shared layers, nested paths) are known from the graph before the run, and
extraction of a shared-layer model equals probe per sample and Keras per call (live, Keras 3 and tf_keras)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import ATOL, keras_outputs, save, seed
from torch_lstm_probe.capture import plan_capture, run_plan
from torch_lstm_probe.capture.keys import key_meaning, matches, split_key


def _shared_model(klib):
    """Two token inputs through one Embedding(mask_zero) and one shared LSTM, then a nested Dense model."""
    layers = klib.layers
    a = klib.Input((5,), dtype="int32", name="a")
    b = klib.Input((5,), dtype="int32", name="b")
    embed = layers.Embedding(12, 3, mask_zero=True, name="embed")
    lstm = layers.LSTM(4, return_sequences=True, name="shared")
    head_in = klib.Input((5, 4), name="head_in")
    head = klib.Model(head_in, layers.Dense(2, name="proj")(head_in), name="head")
    ya, yb = lstm(embed(a)), lstm(embed(b))
    out = layers.Add(name="add")([head(ya), head(yb)])
    return klib.Model([a, b], [ya, yb, out])


@pytest.mark.keras
def test_shared_and_nested_keys_are_planned_before_the_run_and_extract_equals_keras(klib, tmp_path):
    seed(klib)
    keras_model = _shared_model(klib)
    rng = np.random.default_rng(0)
    xa = rng.integers(1, 12, size=(6, 5)).astype(np.int32)
    xb = rng.integers(1, 12, size=(6, 5)).astype(np.int32)
    xa[[1, 4], 3:] = 0
    xb[2, 1:] = 0
    model = tlp.load_keras(save(keras_model, tmp_path, "keras"))
    plan = plan_capture(model, gates=True)
    calls = {t.path: t.calls for t in plan.targets if not t.sub}
    assert calls["shared"] == 2 and calls["embed"] == 2 and calls["head"] == 2 and calls["head/proj"] == 2
    keys = list(run_plan(model, plan, [xa, xb]))
    assert {"shared@0", "shared@1", "shared@0/gates/f", "shared@1/mask", "head@1", "head/proj@1"} <= set(keys)

    acts = tlp.extract(model, [xa, xb], out=tmp_path / "acts", gates=True, batch_size=4, progress=False)
    assert acts.keys() == keys
    for i in range(6):
        one = tlp.probe(model, [xa[i : i + 1], xb[i : i + 1]], gates=True)
        for key in keys:
            torch.testing.assert_close(acts[key][i], one[key][0], atol=ATOL["cpu_float32"], rtol=0, msg=key)
    ya, yb, out = keras_outputs(keras_model, [xa, xb])
    for key, expected in (("shared@0", ya), ("shared@1", yb), ("add", out)):
        torch.testing.assert_close(acts[key].torch(), torch.from_numpy(expected), atol=ATOL["cpu_float32"], rtol=0)
    assert acts.lengths is not None and acts.lengths.tolist() == (xa != 0).sum(1).tolist()
    assert acts.masks["shared@1"][2].tolist() == [True, False, False, False, False]


def test_key_grammar_helpers():
    assert matches("lstm/gates/f", "lstm") and matches("lstm@1:2", "lstm") and not matches("lstm_1", "lstm")
    assert split_key("enc/lstm@1/backward/gates/f") == ("enc/lstm@1", "/backward/gates/f")
    assert split_key("lstm/mask") == ("lstm", "/mask") and split_key("dense") == ("dense", "")
    assert key_meaning("lstm/gates/f", "LSTM").startswith("forget gate f = sigma(z_f)")
    assert "backward half" in key_meaning("bi/backward/gates/z", "GRU")
