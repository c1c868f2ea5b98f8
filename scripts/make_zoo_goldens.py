"""Generate the "zoo" goldens: newer layer families, in ``tests/goldens/zoo/``.

Same machinery, file names and safetensors keys as ``scripts/make_goldens.py`` (this script only
supplies its own cases and output folder): ``<library>_<case>.keras`` / ``.h5`` and a
``<library>_<case>.safetensors`` of inputs and every layer's output computed by that library.
String inputs (the text case) are not tensors: they are stored in the safetensors metadata under
``input:<i>`` as JSON (nested lists of str with the input's shape).

The zoo is a separate folder because other tests iterate over ``tests/goldens/*.safetensors``.

Usage::

    python scripts/make_zoo_goldens.py [--library keras|tf_keras|all] [--case NAME] [--out tests/goldens/zoo]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.make_goldens import (  # noqa: E402
    BATCH,
    FEATURES,
    MASK_TIMESTEPS,
    MASK_VOCAB,
    REPO_ROOT,
    SEQ_INPUT,
    TIMESTEPS,
    Case,
    normal_inputs,
    padded_token_inputs,
    seq_input,
)
from scripts.make_goldens import main as goldens_main  # noqa: E402

ZOO_OUT = REPO_ROOT / "tests" / "goldens" / "zoo"


# -- RNN(cell) / StackedRNNCells ---------------------------------------------


def build_rnn_cells(K, lib):
    inp = seq_input(K)
    seq, h, c = K.layers.RNN(
        K.layers.LSTMCell(4, name="lstm_cell"), return_sequences=True, return_state=True, name="rnn"
    )(inp)
    cells = K.layers.StackedRNNCells([K.layers.LSTMCell(3, name="cell_a"), K.layers.LSTMCell(2, name="cell_b")])
    stacked = K.layers.RNN(cells, go_backwards=True, name="stacked")(seq)
    return K.Model(inp, [stacked, h, c], name="rnn_cells")


# -- Attention ---------------------------------------------------------------


def two_padded_token_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    return [padded_token_inputs(rng)[0], padded_token_inputs(rng)[0]]


def build_attention(K, lib):
    src = K.Input((MASK_TIMESTEPS,), dtype="int32", name="src")
    tgt = K.Input((MASK_TIMESTEPS,), dtype="int32", name="tgt")
    enc = K.layers.Embedding(MASK_VOCAB, 4, mask_zero=True, name="src_embedding")(src)
    enc = K.layers.LSTM(4, return_sequences=True, name="encoder")(enc)
    dec = K.layers.Embedding(MASK_VOCAB, 4, mask_zero=True, name="tgt_embedding")(tgt)
    dec = K.layers.LSTM(4, return_sequences=True, name="decoder")(dec)
    luong, scores = K.layers.Attention(use_scale=True, name="luong")([dec, enc], return_attention_scores=True)
    causal = K.layers.Attention(score_mode="concat", name="causal")([dec, enc, enc], use_causal_mask=True)
    bahdanau, b_scores = K.layers.AdditiveAttention(name="bahdanau")([dec, enc], return_attention_scores=True)
    merged = K.layers.Concatenate(name="merged")([dec, luong, causal, bahdanau])
    out = K.layers.Dense(2, name="head")(merged)
    return K.Model([src, tgt], [out, scores, b_scores], name="attention")


def randomize_attention_scales(model, rng: np.random.Generator) -> None:
    """Attention / AdditiveAttention scales start at 1 (or are absent): give them other values."""
    for layer in model.layers:
        if type(layer).__name__ in ("Attention", "AdditiveAttention") and layer.get_weights():
            layer.set_weights([w + rng.uniform(-0.3, 0.3, w.shape).astype(w.dtype) for w in layer.get_weights()])


def build_multi_head_attention(K, lib):
    tok = K.Input((MASK_TIMESTEPS,), dtype="int32", name="tok")
    emb = K.layers.Embedding(MASK_VOCAB, 4, mask_zero=True, name="embedding")(tok)
    h = K.layers.LSTM(4, return_sequences=True, name="lstm")(emb)
    attended, scores = K.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="self_attention")(
        h, h, return_attention_scores=True
    )
    norm = K.layers.LayerNormalization(name="norm")(K.layers.Add(name="residual")([h, attended]))
    cross = K.layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5, output_shape=6, name="cross_attention")(
        norm, emb, use_causal_mask=True
    )
    out = K.layers.Dense(1, name="head")(cross)
    return K.Model(tok, [out, scores], name="multi_head_attention")


def build_group_query_attention(K, lib):
    tok = K.Input((MASK_TIMESTEPS,), dtype="int32", name="tok")
    emb = K.layers.Embedding(MASK_VOCAB, 4, mask_zero=True, name="embedding")(tok)
    h = K.layers.LSTM(4, return_sequences=True, name="lstm")(emb)
    attended = K.layers.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2, name="gqa")(h, h)
    scored, scores = K.layers.GroupQueryAttention(
        head_dim=2, num_query_heads=2, num_key_value_heads=1, name="gqa_scores"
    )(attended, emb, return_attention_scores=True, use_causal_mask=True)
    return K.Model(tok, [scored, scores], name="group_query_attention")


# -- Convolutional recurrent models --------------------------------------------

FRAMES, SIDE, CHANNELS = 4, 6, 2


def build_conv_lstm2d(K, lib):
    return K.Sequential(
        [
            K.Input((FRAMES, SIDE, SIDE, CHANNELS), name="input"),
            K.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True, name="conv_lstm2d"),
            K.layers.ConvLSTM2D(2, (2, 3), go_backwards=True, name="conv_lstm2d_1"),
            K.layers.Flatten(name="flatten"),
            K.layers.Dense(2, name="dense"),
        ],
        name="conv_lstm2d",
    )


SPEC_TIME, SPEC_FREQ = 8, 6


def build_crnn(K, lib):
    return K.Sequential(
        [
            K.Input((SPEC_TIME, SPEC_FREQ, 1), name="input"),
            K.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2d"),
            K.layers.MaxPooling2D((2, 2), name="max_pooling2d"),
            K.layers.Reshape((SPEC_TIME // 2, (SPEC_FREQ // 2) * 4), name="reshape"),
            K.layers.LSTM(3, return_sequences=True, name="lstm"),
            K.layers.LSTM(3, name="lstm_1"),
            K.layers.Dense(2, name="dense"),
        ],
        name="crnn",
    )


def build_td_conv2d(K, lib):
    return K.Sequential(
        [
            K.Input((FRAMES, SIDE, SIDE, 1), name="input"),
            K.layers.TimeDistributed(K.layers.Conv2D(3, 3, activation="relu", name="conv2d"), name="time_distributed"),
            K.layers.TimeDistributed(K.layers.MaxPooling2D(2, name="max_pooling2d"), name="time_distributed_1"),
            K.layers.TimeDistributed(K.layers.Flatten(name="flatten"), name="time_distributed_2"),
            K.layers.LSTM(3, name="lstm"),
        ],
        name="td_conv2d",
    )


# -- Preprocessing -------------------------------------------------------------

RESCALE, OFFSET = 0.5, 0.25


def shifted_seq_input(rng: np.random.Generator) -> list[np.ndarray]:
    """Features with non-zero means and unequal scales, so Normalization does real work."""
    x = rng.standard_normal((BATCH, TIMESTEPS, FEATURES)) * np.arange(1, FEATURES + 1) + np.linspace(-2, 3, FEATURES)
    return [x.astype(np.float32)]


def build_rescaling_normalization(K, lib):
    norm = K.layers.Normalization(axis=-1, name="normalization")
    adapt = np.random.default_rng(7).standard_normal((64, TIMESTEPS, FEATURES)) * np.arange(1, FEATURES + 1)
    norm.adapt(((adapt + np.linspace(-2, 3, FEATURES)) * RESCALE + OFFSET).astype(np.float32))
    return K.Sequential(
        [
            seq_input(K),
            K.layers.Rescaling(RESCALE, offset=OFFSET, name="rescaling"),
            norm,
            K.layers.LSTM(3, return_sequences=True, name="lstm"),
        ],
        name="rescaling_normalization",
    )


# -- Text ----------------------------------------------------------------------

ADAPT_TEXTS = [
    "The cat sat on the mat.",
    "the dog ate the cat's food",
    "ça va? über straße",
    "東京 tokyo! tokyo",
]
TEXTS = [
    "The cat sat on the mat.",
    "ÜBER the dog, tokyo!",
    "",
    "unknown zebra words here and more words than fit",
    "東京 ça va",
]


def text_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    return [np.array(TEXTS, dtype=object)[:, None]]


def build_text_lstm(K, lib):
    tv = K.layers.TextVectorization(output_sequence_length=6, name="text_vectorization")
    tv.adapt(ADAPT_TEXTS)
    inp = K.Input((1,), dtype="string", name="text")
    x = K.layers.Embedding(tv.vocabulary_size(), 4, mask_zero=True, name="embedding")(tv(inp))
    x = K.layers.LSTM(3, name="lstm")(x)
    return K.Model(inp, K.layers.Dense(2, name="dense")(x), name="text_lstm")


CASES: list[Case] = [
    Case(
        "rnn_cells",
        "Functional Input(7,5) -> RNN(LSTMCell(4), seq, return_state) -> RNN(StackedRNNCells([LSTMCell(3), "
        "LSTMCell(2)]), go_backwards); outputs [stacked, h, c].",
        build_rnn_cells,
        SEQ_INPUT,
    ),
    Case(
        "attention",
        "Inputs src, tgt (7,) int32, 0 = pad -> Embedding(12,4,mask_zero) -> LSTM(4,seq) each -> "
        "Attention(use_scale, scores) / Attention(concat, causal, [q,v,k]) / AdditiveAttention(scores) -> "
        "Concatenate -> Dense(2); outputs [dense, luong scores, bahdanau scores]; batch 5 with padded rows.",
        build_attention,
        two_padded_token_inputs,
        adjust=randomize_attention_scales,
        no_reload=("keras/h5",),
    ),
    Case(
        "multi_head_attention",
        "Input(7,int32) -> Embedding(12,4,mask_zero) -> LSTM(4,seq) -> MultiHeadAttention(2 heads, key_dim 3, "
        "self, scores) -> Add -> LayerNormalization -> MultiHeadAttention(value_dim 5, output_shape 6, causal, "
        "key/value = embedding) -> Dense(1); outputs [dense, scores]; batch 5 with padded rows.",
        build_multi_head_attention,
        padded_token_inputs,
        no_reload=("keras/h5",),
    ),
    Case(
        "group_query_attention",
        "Keras 3 only: Input(7,int32) -> Embedding(12,4,mask_zero) -> LSTM(4,seq) -> GroupQueryAttention(4 query "
        "/ 2 kv heads, head_dim 3) -> GroupQueryAttention(2 / 1 heads, head_dim 2, causal, scores); outputs "
        "[out, scores]; batch 5 with padded rows.",
        build_group_query_attention,
        padded_token_inputs,
        no_reload=("keras/h5",),
        libraries=("keras",),
    ),
    Case(
        "conv_lstm2d",
        "Input(4,6,6,2) -> ConvLSTM2D(3, 3, same, seq) -> ConvLSTM2D(2, (2,3), valid, go_backwards) -> "
        "Flatten -> Dense(2).",
        build_conv_lstm2d,
        normal_inputs((BATCH, FRAMES, SIDE, SIDE, CHANNELS)),
    ),
    Case(
        "crnn",
        "Input(8,6,1) -> Conv2D(4, 3, same, relu) -> MaxPooling2D(2) -> Reshape(4, 12) -> LSTM(3, seq) -> "
        "LSTM(3) -> Dense(2).",
        build_crnn,
        normal_inputs((BATCH, SPEC_TIME, SPEC_FREQ, 1)),
    ),
    Case(
        "td_conv2d",
        "Input(4,6,6,1) -> TimeDistributed(Conv2D(3, 3, relu)) -> TimeDistributed(MaxPooling2D(2)) -> "
        "TimeDistributed(Flatten) -> LSTM(3).",
        build_td_conv2d,
        normal_inputs((BATCH, FRAMES, SIDE, SIDE, 1)),
    ),
    Case(
        "rescaling_normalization",
        "Input(7,5) -> Rescaling(0.5, offset 0.25) -> Normalization(axis -1, adapted) -> LSTM(3, seq); inputs "
        "have per-feature means and scales.",
        build_rescaling_normalization,
        shifted_seq_input,
    ),
    Case(
        "text_lstm",
        "Keras 3 only, .keras only: Input((1,), string) -> TextVectorization(adapted, length 6) -> "
        "Embedding(vocab, 4, mask_zero) -> LSTM(3) -> Dense(2); input:0 is JSON in the metadata.",
        build_text_lstm,
        text_inputs,
        libraries=("keras",),
        formats=("keras",),
    ),
]


def main(argv: list[str] | None = None) -> int:
    return goldens_main(
        argv, cases=CASES, default_out=ZOO_OUT, script=Path(__file__), description=__doc__.splitlines()[0]
    )


if __name__ == "__main__":
    sys.exit(main())
