"""Attention layers around LSTMs, live against Keras 3 and tf_keras, saved as ``.keras`` and ``.h5``.

Three models, each run once by Keras per library and compared layer by layer after loading both
formats, and the ``"<layer>/scores"`` probe keys against the scores Keras returns:

* a Luong/Bahdanau seq2seq: masked encoder and decoder LSTMs, ``Attention`` (dot with a scale,
  concat with a key, causal) and ``AdditiveAttention`` (with and without its scale);
* a transformer-style block: ``MultiHeadAttention`` self-attention with a residual ``Add`` and an
  ``Attention`` reading the same LSTM output after it (Keras 3's ``MultiHeadAttention`` deletes the
  masks of the tensors it reads, so there the value is unmasked), then cross-attention with ``value_dim``,
  ``output_shape``, no biases and a causal mask;
* Keras 3 only: ``GroupQueryAttention`` (four query heads sharing two key/value heads);
* attention layers side by side on the same tensors, where Keras 3's run order decides which of
  them see the masks;
* ``MultiHeadAttention`` on rank-4 inputs ``(batch, 4, 5, 6)`` over ``attention_axes`` (1, 2),
  2 and (2, 1), returning scores, with the masks of an ``Embedding`` of ``(batch, 4, 5)`` ids.

Token rows hold right padding, a hole, a full row and a row with every step masked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import torch_lstm_probe as tlp
from tests.helpers import ATOL, assert_close, assert_model_parity, import_keras, keras_reference, save, seed
from torch_lstm_probe.errors import GraphError, UnsupportedOptionError

STEPS, VOCAB, EMBED, UNITS = 6, 11, 4, 4
FORMATS = ("keras", "h5")
LIBRARIES = ("keras", "tf_keras")


def _tokens(rows: int = 5, steps: int = STEPS, offset: int = 0) -> np.ndarray:
    rng = np.random.default_rng(7 + offset)
    ids = rng.integers(1, VOCAB, size=(rows, steps)).astype("int32")
    ids[0, 4:] = 0  # right padding
    ids[1, 2] = 0  # a hole
    ids[3, :] = 0  # every step masked
    ids[4, : 1 + offset] = 0  # left padding
    return ids


def _seq2seq(k):
    src = k.Input((STEPS,), dtype="int32", name="src")
    tgt = k.Input((STEPS - 1,), dtype="int32", name="tgt")
    enc = k.layers.LSTM(UNITS, return_sequences=True, name="enc")(k.layers.Embedding(VOCAB, EMBED, mask_zero=True)(src))
    dec = k.layers.LSTM(UNITS, return_sequences=True, name="dec")(k.layers.Embedding(VOCAB, EMBED, mask_zero=True)(tgt))
    luong, scores = k.layers.Attention(use_scale=True, name="luong")([dec, enc], return_attention_scores=True)
    concat = k.layers.Attention(score_mode="concat", use_scale=True, name="concat")([dec, enc, enc])
    causal = k.layers.Attention(name="causal")([dec, enc], use_causal_mask=True)
    bahdanau = k.layers.AdditiveAttention(name="bahdanau")([dec, enc])
    plain = k.layers.AdditiveAttention(use_scale=False, name="plain")([dec, enc], use_causal_mask=True)
    merged = k.layers.Concatenate(name="merged")([dec, luong, concat, causal, bahdanau, plain])
    out = k.layers.Dense(2, name="head")(merged)  # per step: a row with every step masked has no mean
    return k.Model([src, tgt], [out, scores], name="seq2seq_attention")


def _transformer(k):
    tok = k.Input((STEPS,), dtype="int32", name="tok")
    emb = k.layers.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(tok)
    h = k.layers.LSTM(UNITS, return_sequences=True, name="lstm")(emb)
    attended, scores = k.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="self")(
        h, h, return_attention_scores=True
    )
    norm = k.layers.LayerNormalization(name="norm")(k.layers.Add(name="residual")([h, attended]))
    cross = k.layers.MultiHeadAttention(
        num_heads=2, key_dim=3, value_dim=5, output_shape=6, use_bias=False, name="cross"
    )(norm, emb, use_causal_mask=True)
    out = k.layers.Dense(1, name="head")(cross)
    # Runs after "self" in any order: in Keras 3 it finds the LSTM output's mask deleted.
    post = k.layers.Attention(name="post")([attended, h])
    return k.Model(tok, [out, scores, post], name="transformer_attention")


def _grouped(k):
    tok = k.Input((STEPS,), dtype="int32", name="tok")
    emb = k.layers.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(tok)
    h = k.layers.LSTM(UNITS, return_sequences=True, name="lstm")(emb)
    attended = k.layers.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2, name="gqa")(h, h)
    scored, scores = k.layers.GroupQueryAttention(
        head_dim=2, num_query_heads=2, num_key_value_heads=1, use_bias=False, name="gqa_scores"
    )(attended, emb, return_attention_scores=True)
    return k.Model(tok, [scored, scores], name="grouped_attention")


def _parallel(k):
    """Attention layers reading the same tensors side by side: Keras 3 runs the later-created ones
    first, and its MultiHeadAttention deletes the masks of what it reads for those run after it."""
    tok = k.Input((STEPS,), dtype="int32", name="tok")
    emb = k.layers.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(tok)
    q = k.layers.LSTM(UNITS, return_sequences=True, name="lstm")(emb)
    luong = k.layers.Attention(use_scale=True, score_mode="concat", name="att")([q, emb], return_attention_scores=True)
    additive = k.layers.AdditiveAttention(name="add")([q, emb, emb], use_causal_mask=True)
    heads = k.layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5, name="mha")(
        q, emb, return_attention_scores=True
    )
    causal = k.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="mha2", output_shape=7)(
        q, emb, emb, use_causal_mask=True
    )
    return k.Model(tok, [luong[0], luong[1], additive, heads[0], heads[1], causal], name="parallel_attention")


CASES = {
    "seq2seq": (_seq2seq, lambda: [_tokens(), _tokens(steps=STEPS - 1, offset=1)], {"luong": "luong:1"}),
    "transformer": (_transformer, lambda: [_tokens()], {"self": "self:1"}),
    "grouped": (_grouped, lambda: [_tokens()], {"gqa_scores": "gqa_scores:1"}),
    "parallel": (_parallel, lambda: [_tokens()], {"att": "att:1", "mha": "mha:1"}),
}


def _randomize(model) -> None:
    """Non-default values for every weight (scales start at 1, biases at 0)."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([w + rng.uniform(-0.3, 0.3, size=w.shape).astype(w.dtype) for w in weights])


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("library", LIBRARIES)
def test_attention_models_match_keras(library: str, case: str, tmp_path: Path):
    if case == "grouped" and library == "tf_keras":
        pytest.skip("tf_keras has no GroupQueryAttention")
    k = import_keras(library)
    seed(k)
    build, inputs_of, score_keys = CASES[case]
    model = build(k)
    _randomize(model)
    inputs = inputs_of()
    reference = keras_reference(k, model, inputs)
    for fmt in FORMATS:
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        assert_model_parity(k, model, converted, inputs, reference=reference)
        acts = tlp.probe(converted, inputs, layers=sorted(score_keys), gates=True)
        for layer, output_key in score_keys.items():
            assert_close(acts[f"{layer}/scores"], reference.layers[output_key], ATOL["cpu_float32"], f"{layer} scores")
    saved = tmp_path / "saved.safetensors"
    tlp.save(converted, saved)  # the run order (Keras 3's, where it matters) survives a reload
    assert_model_parity(k, model, tlp.load(saved), inputs, reference=reference)


def test_scores_of_a_layer_without_return_attention_scores_are_the_softmax_it_used():
    """``"<layer>/scores"`` exists for every attention layer, also where the model does not return
    the scores: rows sum to 1 over the unmasked value steps, 0 on masked ones."""
    k = import_keras("tf_keras")
    seed(k)
    model = _seq2seq(k)
    converted = tlp.load_keras(model)
    src, tgt = _tokens(), _tokens(steps=STEPS - 1, offset=1)
    scores = tlp.probe(converted, [src, tgt], layers=["bahdanau"], gates=True)["bahdanau/scores"]
    assert scores.shape == (5, STEPS - 1, STEPS)
    keep = torch.as_tensor(src != 0)[:, None, :].expand_as(scores)
    rows = keep.any(-1)
    torch.testing.assert_close(scores.sum(-1)[rows], torch.ones(int(rows.sum())))
    assert float(scores[keep.logical_not() & rows[..., None]].abs().max()) < 1e-6


def test_unreproduced_options_are_refused_with_the_option_named():
    k = import_keras("keras")
    x = k.Input((STEPS, EMBED))
    model = k.Model(x, k.layers.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=(0, 1), name="mha")(x, x))
    with pytest.raises(UnsupportedOptionError, match=r"'mha'.*attention_axes"):
        tlp.load_keras(model)
    q = k.Input((STEPS, EMBED))
    explicit = k.layers.MultiHeadAttention(num_heads=1, key_dim=2, name="explicit")(
        q, q, attention_mask=k.ops.ones((1, STEPS, STEPS), dtype="bool")
    )
    with pytest.raises(UnsupportedOptionError, match=r"'explicit'.*attention_mask"):
        tlp.load_keras(k.Model(q, explicit))


def _grid(k):
    """``MultiHeadAttention`` over axes of ``(batch, 4, 5, 6)`` inputs. Keras places the masks of
    rank-4 tensors by fixed axes, so only some layers get masks that fit their scores: a query mask
    (both libraries) and, in Keras 3, query and value masks over axis 2."""
    x = k.Input((4, 5, 6), name="grid")
    tok = k.Input((4, 5), dtype="int32", name="tok")
    joint, joint_scores = k.layers.MultiHeadAttention(num_heads=2, key_dim=3, attention_axes=(1, 2), name="joint")(
        x, x, return_attention_scores=True
    )  # scores (N, 2, 4, 5, 4, 5)
    rows = k.layers.MultiHeadAttention(
        num_heads=2, key_dim=2, value_dim=3, output_shape=4, attention_axes=2, name="rows"
    )(joint, x)
    swapped = k.layers.MultiHeadAttention(
        num_heads=1, key_dim=2, use_bias=False, attention_axes=(2, 1), name="swapped"
    )(rows, joint, x)
    emb = k.layers.Embedding(VOCAB, 6, mask_zero=True, name="emb")(tok)
    queried = k.layers.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=2, name="queried")(emb, x)
    outputs = [joint_scores, swapped, queried]
    if hasattr(k.layers, "GroupQueryAttention"):  # Keras 3
        cols, col_scores = k.layers.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=[2], name="cols")(
            emb, emb, return_attention_scores=True
        )  # scores (N, 4, 2, 5, 5)
        outputs += [cols, col_scores]
    return k.Model([x, tok], outputs, name="grid_attention")


def _grid_inputs() -> list[np.ndarray]:
    x = np.random.default_rng(5).normal(size=(3, 4, 5, 6)).astype("float32")
    ids = np.random.default_rng(6).integers(1, VOCAB, size=(3, 4, 5)).astype("int32")
    ids[0, 1] = 0  # a row with every position masked
    ids[1, 2, 3] = 0  # a hole
    return [x, ids]


@pytest.mark.parametrize("library", LIBRARIES)
def test_multi_head_attention_over_axes_of_rank4_inputs_matches_keras(library: str, tmp_path: Path):
    k = import_keras(library)
    seed(k)
    model = _grid(k)
    _randomize(model)
    inputs = _grid_inputs()
    reference = keras_reference(k, model, inputs)
    score_keys = {"joint": "joint:1", **({"cols": "cols:1"} if "cols:1" in reference.layers else {})}
    for fmt in FORMATS:
        converted = tlp.load_keras(save(model, tmp_path, fmt))
        assert_model_parity(k, model, converted, inputs, reference=reference)
        acts = tlp.probe(converted, inputs, layers=sorted(score_keys), gates=True)
        for layer, output_key in score_keys.items():
            assert_close(acts[f"{layer}/scores"], reference.layers[output_key], ATOL["cpu_float32"], f"{layer} scores")


def test_attention_over_the_heads_axis_is_refused():
    """A rank-3 input has only its steps axis to attend over: Keras 3's (1, 2) and tf_keras' [-2]
    (counted from the projection's rank) reach the heads axis."""
    k = import_keras("keras")
    x = k.Input((STEPS, EMBED))
    model = k.Model(x, k.layers.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=(1, 2), name="mha")(x, x))
    with pytest.raises(GraphError, match=r"'mha'.*attention_axes"):
        tlp.load_keras(model)
    tk = import_keras("tf_keras")
    x = tk.Input((STEPS, EMBED))
    model = tk.Model(x, tk.layers.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=[-2], name="mha")(x, x))
    with pytest.raises(UnsupportedOptionError, match=r"'mha'.*attention_axes.*heads"):
        tlp.load_keras(model)


@pytest.mark.parametrize("library", LIBRARIES)
def test_dropout_and_the_masked_query_rule(library: str, tmp_path: Path):
    """Keras 3's MultiHeadAttention with dropout > 0 skips its fused dot_product_attention even at
    inference, so a masked query step gets zero weights (not uniform ones) without returning scores;
    tf_keras keeps its uniform rule with dropout too."""
    k = import_keras(library)
    seed(k)
    tok = k.Input((STEPS,), dtype="int32")
    emb = k.layers.Embedding(VOCAB, EMBED, mask_zero=True, name="emb")(tok)
    out = k.layers.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.3, name="mha")(emb, emb)
    model = k.Model(tok, out, name="mha_dropout")
    _randomize(model)
    inputs = [_tokens()]
    reference = keras_reference(k, model, inputs)
    for fmt in FORMATS:
        assert_model_parity(k, model, tlp.load_keras(save(model, tmp_path, fmt)), inputs, reference=reference)
