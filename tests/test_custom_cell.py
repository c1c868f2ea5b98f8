"""A user's cell in ``keras.layers.RNN``: a peephole LSTM cell written as a Keras custom cell, given
to ``custom_layers`` as a one-step PyTorch module, live against Keras 3 and tf_keras (``.keras``
and ``.h5``): masks with holes, ``go_backwards``, ``return_state``, ``Bidirectional``, the ``h``
probe key and an ``intervene`` edit of ``h``; the contract's errors without Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import torch_lstm_probe as tlp
from tests.helpers import assert_model_parity, import_keras, keras_reference, save, seed
from torch_lstm_probe.errors import InputError, UnsupportedLayerError, UnsupportedOptionError

UNITS, VOCAB, EMBED, STEPS = 3, 9, 4, 6


_CELLS: dict[str, type] = {}


def keras_peephole_cell(k):
    """The Keras peephole LSTM cell (``i, f`` see ``c_{t-1}``, ``o`` sees ``c_t``), registered once
    per library so that Keras can rebuild the ``Bidirectional`` copy of the RNN."""
    if k.__name__ not in _CELLS:
        _CELLS[k.__name__] = k.saving.register_keras_serializable(package="tests")(_peephole_class(k))
    return _CELLS[k.__name__]


def _peephole_class(k):
    ops = k.ops if hasattr(k, "ops") else __import__("tensorflow")
    sigmoid = k.activations.sigmoid

    class PeepholeLSTMCell(k.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = [units, units]
            self.output_size = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 4 * self.units), name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(self.units, 4 * self.units), name="recurrent_kernel")
            self.peephole = self.add_weight(shape=(3, self.units), name="peephole", initializer="uniform")
            self.bias = self.add_weight(shape=(4 * self.units,), name="bias", initializer="uniform")

        def call(self, x, states):
            h, c = states[0], states[1]
            z = ops.matmul(x, self.kernel) + ops.matmul(h, self.recurrent_kernel) + self.bias
            zi, zf, zc, zo = ops.split(z, 4, axis=-1)
            i = sigmoid(zi + self.peephole[0] * c)
            f = sigmoid(zf + self.peephole[1] * c)
            c = f * c + i * ops.tanh(zc)
            h = sigmoid(zo + self.peephole[2] * c) * ops.tanh(c)
            return h, [h, c]

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    return PeepholeLSTMCell


class PeepholeCell(nn.Module):
    """The same cell as a one-step PyTorch module: ``forward(x_t, [h, c]) -> (h, [h, c])``."""

    def __init__(self, config: dict, weights: list[np.ndarray]) -> None:
        super().__init__()
        kernel, recurrent, peephole, bias = (torch.as_tensor(w) for w in weights)
        self.input_size = kernel.shape[0]
        self.state_size = [config["units"], config["units"]]
        self.kernel, self.recurrent_kernel = nn.Parameter(kernel), nn.Parameter(recurrent)  # (F, 4H), (H, 4H)
        self.peephole, self.bias = nn.Parameter(peephole), nn.Parameter(bias)  # (3, H), (4H,)

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, c = states  # each (N, H)
        zi, zf, zc, zo = (x @ self.kernel + h @ self.recurrent_kernel + self.bias).chunk(4, dim=-1)
        i = torch.sigmoid(zi + self.peephole[0] * c)
        f = torch.sigmoid(zf + self.peephole[1] * c)
        c = f * c + i * torch.tanh(zc)
        h = torch.sigmoid(zo + self.peephole[2] * c) * torch.tanh(c)
        return h, [h, c]


CUSTOM = {"PeepholeLSTMCell": PeepholeCell}


def _model(k):
    cell = keras_peephole_cell(k)
    tok = k.Input((STEPS,), dtype="int32", name="tok")
    emb = k.layers.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(tok)
    seq = k.layers.RNN(cell(UNITS), return_sequences=True, name="peep")(emb)
    back, h, c = k.layers.RNN(cell(UNITS), go_backwards=True, return_state=True, name="back")(emb)
    both = k.layers.Bidirectional(k.layers.RNN(cell(UNITS)), name="bi")(seq)
    return k.Model(tok, [seq, k.layers.Concatenate(name="joined")([back, h, c, both])], name="peephole")


def _tokens() -> np.ndarray:
    ids = np.random.default_rng(5).integers(1, VOCAB, size=(4, STEPS)).astype("int32")
    ids[0, 4:] = 0  # right padding
    ids[1, 2] = 0  # a hole
    ids[2, :2] = 0  # left padding
    return ids


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_a_peephole_cell_matches_keras(library: str, tmp_path: Path):
    k = import_keras(library)
    seed(k)
    model = _model(k)
    x = [_tokens()]
    reference = keras_reference(k, model, x)
    for fmt in ("keras", "h5"):
        converted = tlp.load_keras(save(model, tmp_path, fmt), custom_layers=CUSTOM)
        assert_model_parity(k, model, converted, x, reference=reference)
    acts = tlp.probe(converted, x, layers=["peep"], gates=True)
    masked = torch.as_tensor(x[0] == 0)
    torch.testing.assert_close(acts["peep/gates/h"][~masked], acts["peep"][~masked])  # h at real steps
    edited = tlp.intervene(converted, x, {"peep/gates/h": tlp.set_units(0.0, units=[0])}, layers=["peep"])
    assert float(edited["peep"][..., 0].abs().max()) == 0.0 and float(edited["peep"][..., 1:].abs().max()) > 0


class _BadCell(nn.Module):
    def __init__(self, sizes: object, twist: bool = False) -> None:
        super().__init__()
        self.input_size, self.state_size, self.twist = EMBED, sizes, twist

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = torch.tanh(x[:, :UNITS] + states[0])
        return (h + 1 if self.twist else h), [h]


def test_the_cell_contract_is_checked_with_the_layer_named():
    k = import_keras("keras")
    cell = keras_peephole_cell(k)
    x = k.Input((STEPS, EMBED))
    model = k.Model(x, k.layers.RNN(cell(UNITS), name="r")(x))
    with pytest.raises(
        UnsupportedLayerError,
        match=r"'r' \(RNN\) wraps a cell of class '(tests>)?PeepholeLSTMCell'.*custom_layers=\{'PeepholeLSTMCell'",
    ):
        tlp.load_keras(model)
    with pytest.raises(UnsupportedOptionError, match=r"'r' \(RNN\).*states have sizes \[3, 4\]"):
        tlp.load_keras(model, custom_layers={"PeepholeLSTMCell": lambda c, w: _BadCell([3, 4])})
    with pytest.raises(UnsupportedOptionError, match=r"'r' \(RNN\).*state_size None"):
        tlp.load_keras(model, custom_layers={"PeepholeLSTMCell": lambda c, w: _BadCell(None)})
    twisted = tlp.load_keras(model, custom_layers={"PeepholeLSTMCell": lambda c, w: _BadCell(UNITS, twist=True)})
    with pytest.raises(InputError, match=r"'r'.*not its first state"):
        twisted(np.zeros((2, STEPS, EMBED), dtype="float32"))
