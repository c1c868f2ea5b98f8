"""Benchmark: all gates of every LSTM layer vs the plain forward, side by side in one run.

Usage: python scripts/bench_gates.py [--threads 1] [--batch 64] [--steps 100] [--device cpu|cuda]

Reports, on the scaled-up seed model (Embedding(20000,100) → LSTM(256, seq) → LSTM(256) →
Dense(1)): plain forward, ``tlp.probe(..., gates=True)`` with the automatic gate path, the step
loop and the fused re-derivation, and a Python ``nn.LSTMCell`` loop (what users write by hand).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts._bench_common import interleaved_medians, median_time, pin_threads, scaled_seed_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--steps", type=int, default=100, help="tokens per sequence")
    parser.add_argument("--units", type=int, default=256, help="LSTM units")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per measurement (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    pin_threads(args.threads)

    import torch
    from torch import nn

    import torch_lstm_probe as tlp
    from torch_lstm_probe.layers.lstm import LSTM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    units, dim = args.units, 100
    model = scaled_seed_model(args.steps, units, args.device, dim)  # (B, steps) token ids -> (B, 1)
    x = torch.randint(1, 20000, (args.batch, args.steps), device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn) -> float:
        def run() -> None:
            fn()
            sync()

        return median_time(run, args.repeats)

    def set_path(path: str) -> None:
        for m in model.modules():
            if isinstance(m, LSTM):
                m.gate_path = path

    def gates_with(path: str):
        def run() -> None:
            set_path(path)
            tlp.probe(model, x, layers=["lstm_1", "lstm_2"], gates=True)
            sync()

        return run

    def plain_forward() -> None:
        model(x)
        sync()

    def edited(keys: tuple[str, ...]):
        edits = {key: tlp.set_units(1.0, units=[0]) for key in keys}

        def run() -> None:
            set_path("auto")
            tlp.intervene(model, x, edits)
            sync()

        return run

    with torch.inference_mode():
        times = interleaved_medians(
            {
                "plain": plain_forward,
                "auto": gates_with("auto"),
                "loop": gates_with("loop"),
                "fused": gates_with("fused"),
                "edit_1": edited(("lstm_1/gates/f",)),
                "edit_2": edited(("lstm_1/gates/f", "lstm_2/gates/f")),
            },
            args.repeats,
        )
        plain = times.pop("plain")
        edit_times = {"one layer": times.pop("edit_1"), "both layers": times.pop("edit_2")}
        results = times
        set_path("auto")

        cells = [nn.LSTMCell(dim, units), nn.LSTMCell(units, units)]
        for cell, lstm in zip(cells, (model.layer("lstm_1"), model.layer("lstm_2"))):
            cell.to(args.device)
            cell.load_state_dict(
                {
                    "weight_ih": lstm.weight_ih_l0,
                    "weight_hh": lstm.weight_hh_l0,
                    "bias_ih": lstm.bias_ih_l0,
                    "bias_hh": lstm.bias_hh_l0,
                }
            )

        def cell_loop() -> None:
            seq = model.layer("embedding")(x)
            for cell in cells:
                h = seq.new_zeros(args.batch, units)
                c = torch.zeros_like(h)
                outs = []
                for t in range(args.steps):
                    h, c = cell(seq[:, t], (h, c))
                    outs.append(h)
                seq = torch.stack(outs, 1)

        cell_time = timed(cell_loop)
        torch_1 = nn.LSTM(dim, units, batch_first=True).to(args.device).eval()
        torch_2 = nn.LSTM(units, units, batch_first=True).to(args.device).eval()
        emb = model.layer("embedding")(x)

        def torch_stack() -> None:
            torch_2(torch_1(emb)[0])

        fused_alone = timed(torch_stack)

    print(
        f"workload: Embedding(20000,{dim}) -> LSTM({units}, seq) -> LSTM({units}) -> Dense(1); batch {args.batch} x "
        f"{args.steps} steps; device {args.device}; {args.threads} thread(s); torch {torch.__version__}"
    )
    print(f"{'plain forward':40s} {plain * 1e3:9.2f} ms   {args.batch / plain:9.0f} seq/s")
    for path, t in results.items():
        print(
            f"{'forward + all gates, path=' + path:40s} {t * 1e3:9.2f} ms   {args.batch / t:9.0f} seq/s   ratio {t / plain:.2f}x (target <= 1.5)"
        )
    for what, t in edit_times.items():
        print(
            f"{'tlp.intervene, f edited in ' + what:40s} {t * 1e3:9.2f} ms   {args.batch / t:9.0f} seq/s   "
            f"ratio {t / plain:.2f}x (the edited layers run their exact step loop)"
        )
    print(f"{'Python nn.LSTMCell loop (no gates!)':40s} {cell_time * 1e3:9.2f} ms   ratio {cell_time / plain:.2f}x")
    print(
        f"{'the two nn.LSTM layers alone':40s} {fused_alone * 1e3:9.2f} ms   {args.batch / fused_alone:9.0f} seq/s; "
        f"forward + all gates runs at {fused_alone / results['auto']:.2f} of their throughput"
    )


if __name__ == "__main__":
    main()
