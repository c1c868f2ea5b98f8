"""Build the bundled example: a tiny Keras 3 LSTM sentence classifier.

Writes three files to ``torch_lstm_probe/examples/``:

* ``sentiment_lstm.keras``             -- the trained Keras 3 model
* ``sentiment_lstm.json``              -- texts, labels, word index and padded inputs
* ``sentiment_lstm_keras.safetensors`` -- reference arrays computed by Keras
  (``input``, ``lstm`` and ``output``)

Usage::

    python scripts/make_example.py [--out torch_lstm_probe/examples]
"""

from __future__ import annotations

import argparse
import json
import os
import string
import zipfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "torch_lstm_probe" / "examples"

DOCS = [
    "Well done!",
    "Good work",
    "Great effort",
    "nice work",
    "Excellent!",
    "Weak",
    "Poor effort!",
    "not good",
    "poor work",
    "Could have done better.",
]
LABELS = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
MAX_LENGTH = 4
EMBEDDING_DIM = 100
SEED = 0
EPOCHS = 50

_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation})


def tokenize(text: str) -> list[str]:
    """Lower-case, replace punctuation by spaces and split on whitespace."""
    return text.lower().translate(_PUNCT_TABLE).split()


def build_word_index(docs: list[str]) -> dict[str, int]:
    """Word index ordered by descending count, ties by first appearance; starts at 1."""
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for doc in docs:
        for word in tokenize(doc):
            counts[word] += 1
            first_seen.setdefault(word, len(first_seen))
    ordered = sorted(counts, key=lambda w: (-counts[w], first_seen[w]))
    return {word: i + 1 for i, word in enumerate(ordered)}


def pad_post(sequences: list[list[int]], maxlen: int) -> np.ndarray:
    """Pad with zeros at the end and truncate at the end (``padding='post'``)."""
    out = np.zeros((len(sequences), maxlen), dtype=np.int32)
    for row, seq in enumerate(sequences):
        seq = seq[:maxlen]
        out[row, : len(seq)] = seq
    return out


def deflate_archive(path: Path) -> None:
    """Rewrite a ``.keras`` zip with DEFLATE compression.

    Keras writes its archive members uncompressed; the weights alone are about
    190 KB here.  ``keras.models.load_model`` reads a deflated archive just the
    same, and the bundled example stays small.
    """
    tmp = path.with_name(path.name + ".tmp")
    with (
        zipfile.ZipFile(path) as src,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as dst,
    ):
        for info in src.infolist():
            data = src.read(info)
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data)
    tmp.replace(path)


def build_model(keras, vocab_size: int):
    return keras.Sequential(
        [
            keras.Input((MAX_LENGTH,), dtype="int32"),
            keras.layers.Embedding(vocab_size, EMBEDDING_DIM, name="embeddings"),
            keras.layers.LSTM(64, name="lstm"),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(64, name="dense"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1, activation="sigmoid", name="output"),
        ],
        name="sentiment_lstm",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)

    import keras
    from safetensors.numpy import save_file

    word_index = build_word_index(DOCS)
    sequences = [[word_index[w] for w in tokenize(d)] for d in DOCS]
    padded = pad_post(sequences, MAX_LENGTH)
    labels = np.asarray(LABELS, dtype=np.float32)
    vocab_size = len(word_index) + 1

    keras.utils.set_random_seed(SEED)
    model = build_model(keras, vocab_size)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(padded, labels, epochs=EPOCHS, verbose=0)

    # Save an uncompiled copy: the Adam slots would triple the file size and
    # are of no use for inference or conversion.
    # clear_session() resets the automatic layer names (dropout, dropout_1).
    trained_weights = model.get_weights()
    keras.backend.clear_session()
    model = build_model(keras, vocab_size)
    model.set_weights(trained_weights)
    model_path = out_dir / "sentiment_lstm.keras"
    model.save(model_path)
    deflate_archive(model_path)

    lstm_model = keras.Model(model.inputs, model.get_layer("lstm").output)
    lstm_out = np.asarray(lstm_model.predict(padded, verbose=0), dtype=np.float32)
    output = np.asarray(model.predict(padded, verbose=0), dtype=np.float32)

    with open(out_dir / "sentiment_lstm.json", "w", encoding="utf-8") as fh:
        json.dump(
            {
                "docs": DOCS,
                "labels": LABELS,
                "word_index": word_index,
                "max_length": MAX_LENGTH,
                "padded": padded.tolist(),
            },
            fh,
            indent=2,
        )
        fh.write("\n")

    save_file(
        {"input": padded, "lstm": lstm_out, "output": output},
        str(out_dir / "sentiment_lstm_keras.safetensors"),
        metadata={"keras_version": keras.__version__, "library": "keras"},
    )

    # Sanity check: the saved model reproduces the stored output.
    reloaded = keras.models.load_model(model_path)
    again = reloaded.predict(padded, verbose=0)
    np.testing.assert_allclose(again, output, atol=1e-6, rtol=0)

    accuracy = float(np.mean((output[:, 0] > 0.5) == (labels > 0.5)))
    print(f"vocab_size={vocab_size} train accuracy={accuracy:.2f}")
    print("word_index:", word_index)
    for path in sorted(out_dir.iterdir()):
        if path.is_file():
            print(f"  {path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
