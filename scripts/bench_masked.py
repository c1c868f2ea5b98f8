"""Benchmark: masked vs unmasked forward (right- and left-padded), and a converted GRU vs a
hand-written nn.GRU. Side by side in one run, threads pinned.

Usage: python scripts/bench_masked.py [--threads 1] [--batch 64] [--steps 100] [--repeats 15]

The masked model is the scaled-up seed model with ``Embedding(mask_zero=True)``; lengths are
drawn uniformly from 50..100 of 100 steps. Keras' ``pad_sequences`` pads on the left by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts._bench_common import interleaved_medians, pin_threads, seed_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--steps", type=int, default=100, help="padded length")
    parser.add_argument("--units", type=int, default=256, help="recurrent units")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per measurement (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    pin_threads(args.threads)

    import torch
    from torch import nn

    from torch_lstm_probe.model import KerasModel

    torch.manual_seed(0)
    unmasked = KerasModel(seed_config(args.steps, args.units)).to(args.device).eval()
    masked = KerasModel(seed_config(args.steps, args.units, mask_zero=True)).to(args.device).eval()
    masked.load_state_dict(unmasked.state_dict())
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.steps // 2, args.steps + 1, (args.batch,), generator=gen)
    tokens = torch.randint(1, 20000, (args.batch, args.steps), generator=gen)
    t = torch.arange(args.steps)
    right = torch.where(t[None] < lengths[:, None], tokens, 0).to(args.device)
    left = torch.where(t[None] >= args.steps - lengths[:, None], tokens, 0).to(args.device)
    holes = right.clone()
    holes[:, 10] = 0  # one hole per row: the exact (slow) path

    def run(model, x):
        def call() -> None:
            model(x)
            sync()

        return call

    with torch.inference_mode():
        times = interleaved_medians(
            {
                "base": run(unmasked, right),
                "right": run(masked, right),
                "left": run(masked, left),
                "holes": run(masked, holes),
            },
            args.repeats,
        )
        base, r, lft, hol = times["base"], times["right"], times["left"], times["holes"]

        gru = KerasModel(seed_config(args.steps, args.units, recurrent="GRU")).to(args.device).eval()
        emb = gru.layer("embedding")
        g1, g2, head = gru.layer("gru_1"), gru.layer("gru_2"), gru.layer("head")
        hand_1 = nn.GRU(100, args.units, batch_first=True).to(args.device)
        hand_2 = nn.GRU(args.units, args.units, batch_first=True).to(args.device)
        hand_1.load_state_dict({k: v for k, v in g1.state_dict().items()})
        hand_2.load_state_dict({k: v for k, v in g2.state_dict().items()})

        def hand_gru(x: torch.Tensor) -> torch.Tensor:
            y, _ = hand_1(emb(x))
            _, h = hand_2(y)
            return head(h[-1])

        err = float((gru(right) - hand_gru(right)).abs().max())
        gru_times = interleaved_medians({"converted": run(gru, right), "hand": run(hand_gru, right)}, args.repeats)
        gru_t, hand_t = gru_times["converted"], gru_times["hand"]

    print(
        f"workload: Embedding(20000,100) -> LSTM({args.units}, seq) -> LSTM({args.units}) -> Dense(1); batch {args.batch} x "
        f"{args.steps} steps, lengths {int(lengths.min())}..{int(lengths.max())}; device {args.device}; {args.threads} thread(s)"
    )
    print(f"{'unmasked':34s} {base * 1e3:9.2f} ms")
    print(f"{'masked, right-padded':34s} {r * 1e3:9.2f} ms   ratio {r / base:.2f}x (target <= 1.3)")
    print(f"{'masked, left-padded (pad_sequences)':34s} {lft * 1e3:9.2f} ms   ratio {lft / base:.2f}x (target <= 1.3)")
    print(f"{'masked with a hole (fused)':34s} {hol * 1e3:9.2f} ms   ratio {hol / base:.2f}x")
    print(
        f"{'converted GRU model':34s} {gru_t * 1e3:9.2f} ms   vs hand-written nn.GRU {hand_t * 1e3:.2f} ms: "
        f"ratio {gru_t / hand_t:.3f} (target <= 1.05); max |diff| {err:.1e}"
    )


if __name__ == "__main__":
    main()
