"""Render the README's plot images from the bundled example into ``docs/images/``.

The statistics are taken over the example's ten training sentences (``sentiment_lstm.json``);
the heatmaps and the token-coloured text (as an image: the README cannot hold styled HTML) show
the last, longest one.

Usage::

    python scripts/make_plot_images.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import torch_lstm_probe as tlp
from torch_lstm_probe.analysis import gate_stats
from torch_lstm_probe.analysis.plots import (
    heatmap,
    mean_by_step,
    saturation_scatter,
    save_png,
    timescale_hist,
    token_figure,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "torch_lstm_probe" / "examples"
DEFAULT_OUT = REPO_ROOT / "docs" / "images"


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNG files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    model = tlp.load_keras(EXAMPLES / "sentiment_lstm.keras")
    meta = json.loads((EXAMPLES / "sentiment_lstm.json").read_text(encoding="utf-8"))
    ids = np.asarray(meta["padded"], dtype=np.int32)  # (10, 4)
    words = {index: word for word, index in meta["word_index"].items()}
    words[0] = "<pad>"
    stats = gate_stats(model, ids, progress=False)

    sample = ids[-1:]  # (1, 4): "could have done better"
    tokens = [words[int(t)] for t in sample[0]]
    acts = tlp.probe(model, sample, gates=True)
    cell = acts["lstm/gates/c"][0]  # (4, 64)
    tanh_c = torch.tanh(cell)  # (4, 64)
    # the unit whose final tanh(c) best separates the positive sentences from the negative ones
    final = torch.tanh(tlp.probe(model, ids, gates=True)["lstm/gates/c"][:, -1])  # (10, 64)
    positive = torch.as_tensor(meta["labels"]) == 1  # (10,)
    unit = int(torch.argmax((final[positive].mean(dim=0) - final[~positive].mean(dim=0)).abs()))

    figures = {
        "saturation.png": saturation_scatter(stats),
        "timescales.png": timescale_hist(stats),
        "mean_by_step_f.png": mean_by_step(stats, "f"),
        "heatmap_c.png": heatmap(cell, tokens=tokens, title="lstm: cell state c"),
        "heatmap_f.png": heatmap(acts["lstm/gates/f"][0], tokens=tokens, title="lstm: forget gate f"),
        "tokens_tanh_c.png": token_figure(
            tanh_c,
            tokens,
            unit=unit,
            title=f"lstm: tanh(c) of unit {unit}, the most sentiment-selective, on a negative text",
            signed=True,
            width=6.0,
        ),
    }
    written = []
    for name, fig in figures.items():
        written.append(save_png(fig, args.out / name))
    for path in written:
        print(f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}: {path.stat().st_size} bytes")
    return written


if __name__ == "__main__":
    main()
