"""Benchmark: plain forward of a converted model vs a hand-written nn.LSTM stack, the same
model exported to ONNX Runtime and compiled with torch.compile, Keras on TensorFlow and Keras 3
on torch, plus file → ready module. All in one run, threads pinned (ONNX Runtime with the same
thread count and its idle spinning off, so it does not steal the other cores).

Usage: python scripts/bench_forward.py [--threads 1] [--batch 64] [--steps 100] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts._bench_common import interleaved_medians, median_time, pin_threads  # noqa: E402


def _make_model(path: Path, steps: int) -> None:
    """Builds and saves the seed model with Keras 3 (TF backend) in a child process."""
    code = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
from scripts._bench_common import build_seed_model
keras.utils.set_random_seed(0)
build_seed_model(keras, steps={steps}).save({str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def _portable_rows(model, x, conv: float, threads: int, repeats: int, workdir: Path) -> None:
    """ONNX Runtime and torch.compile rows, each timed interleaved with the converted model."""
    import numpy as np
    import torch

    try:
        import onnxruntime as ort

        path = workdir / "model.onnx"
        torch.onnx.export(model, (x,), str(path), dynamic_shapes=model.dynamic_shapes(), dynamo=True, verbose=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        with torch.inference_mode():
            err = float(np.abs(session.run(None, feed)[0] - model(x).numpy()).max())
            times = interleaved_medians({"ort": lambda: session.run(None, feed), "ours": lambda: model(x)}, repeats)
        print(
            f"{'ONNX Runtime (exported)':32s} {times['ort'] * 1e3:9.2f} ms  ratio ORT/converted = "
            f"{times['ort'] / times['ours']:.3f} (same run: converted {times['ours'] * 1e3:.2f} ms); max |diff| {err:.1e}"
        )
    except Exception as err_:  # noqa: BLE001 - a missing exporter must not hide the other rows
        print(f"ONNX Runtime: not measured ({type(err_).__name__}: {str(err_).splitlines()[0][:120]})")
    compiled = torch.compile(model)
    with torch.inference_mode():
        err = float((compiled(x) - model(x)).abs().max())
        times = interleaved_medians({"compiled": lambda: compiled(x), "ours": lambda: model(x)}, repeats)
    print(
        f"{'torch.compile(converted)':32s} {times['compiled'] * 1e3:9.2f} ms  ratio compiled/eager = "
        f"{times['compiled'] / times['ours']:.3f} (same run: eager {times['ours'] * 1e3:.2f} ms); max |diff| {err:.1e}"
    )


def _keras_child(backend: str, path: Path, batch: int, steps: int, threads: int, repeats: int) -> dict:
    """Times model.predict (and a direct call) in a fresh process with the given Keras backend."""
    code = f"""
import os, sys, json
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from scripts._bench_common import pin_threads, median_time
pin_threads({threads})
os.environ["KERAS_BACKEND"] = {backend!r}
import numpy as np
if {backend!r} == "tensorflow":
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads({threads})
    tf.config.threading.set_inter_op_parallelism_threads({threads})
import keras
model = keras.saving.load_model({str(path)!r})
x = np.random.default_rng(0).integers(1, 20000, ({batch}, {steps})).astype("int32")
predict = median_time(lambda: model.predict(x, batch_size={batch}, verbose=0), {repeats})
call = median_time(lambda: model(x, training=False), {repeats})
print("RESULT" + json.dumps({{"predict": predict, "call": call}}))
"""
    env = dict(os.environ, KERAS_BACKEND=backend)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def _load_time(path: Path, repeats: int) -> dict:
    """Times file → ready module in a fresh process and checks TensorFlow is never imported."""
    code = f"""
import sys, time, json
t0 = time.perf_counter()
import torch_lstm_probe as tlp
t1 = time.perf_counter()
times = []
for _ in range({repeats}):
    s = time.perf_counter()
    model = tlp.load_keras({str(path)!r})
    times.append(time.perf_counter() - s)
times.sort()
print("RESULT" + json.dumps({{"import": t1 - t0, "load": times[len(times) // 2],
      "tensorflow_imported": "tensorflow" in sys.modules, "keras_imported": "keras" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for every library")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--steps", type=int, default=100, help="tokens per sequence")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median)")
    parser.add_argument("--skip-keras", action="store_true", help="skip the Keras (TF and torch backend) timings")
    args = parser.parse_args()
    pin_threads(args.threads)

    import numpy as np
    import torch
    from torch import nn

    import torch_lstm_probe as tlp

    workdir = Path(tempfile.mkdtemp())
    path = workdir / "seed_scaled.keras"
    _make_model(path, args.steps)
    size_mb = path.stat().st_size / 1e6

    model = tlp.load_keras(path)
    emb, l1, l2, head = (model.layer(n) for n in ("embedding", "lstm_1", "lstm_2", "head"))

    class HandWritten(nn.Module):
        """What a user would write by hand: nn.Embedding → nn.LSTM → nn.LSTM → nn.Linear."""

        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(*emb.weight.shape)
            self.lstm_1 = nn.LSTM(l1.input_size, l1.hidden_size, batch_first=True)
            self.lstm_2 = nn.LSTM(l2.input_size, l2.hidden_size, batch_first=True)
            self.head = nn.Linear(head.in_features, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, _ = self.lstm_1(self.embedding(x))
            _, (h, _) = self.lstm_2(y)
            return torch.sigmoid(self.head(h[-1]))

    hand = HandWritten().eval()
    hand.embedding.weight.data.copy_(emb.weight)
    for src, dst in ((l1, hand.lstm_1), (l2, hand.lstm_2)):
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(dst, name).data.copy_(getattr(src, name))
    hand.head.load_state_dict({"weight": head.weight, "bias": head.bias})

    x_np = np.random.default_rng(0).integers(1, 20000, (args.batch, args.steps))
    x = torch.from_numpy(x_np)
    with torch.inference_mode():
        err = float((model(x) - hand(x)).abs().max())

        def run_converted() -> None:
            model(x)

        def run_hand() -> None:
            hand(x)

        # Interleave the two so drift on a shared machine hits both alike.
        t_conv, t_hand = [], []
        for _ in range(3):
            t_conv.append(median_time(run_converted, args.repeats // 3 + 1))
            t_hand.append(median_time(run_hand, args.repeats // 3 + 1))
    conv, hand_t = sorted(t_conv)[1], sorted(t_hand)[1]

    print(
        f"workload: Embedding(20000,100) -> LSTM(256, seq) -> LSTM(256) -> Dense(1); batch {args.batch} x {args.steps} tokens; "
        f"{args.threads} thread(s); torch {torch.__version__}"
    )
    print(f"converted vs hand-written max |diff| = {err:.2e}")
    print(f"{'converted model':32s} {conv * 1e3:9.2f} ms  ({args.batch / conv:8.0f} seq/s)")
    print(
        f"{'hand-written nn.LSTM stack':32s} {hand_t * 1e3:9.2f} ms  ratio converted/hand = {conv / hand_t:.3f} (target <= 1.05)"
    )
    _portable_rows(model, x, conv, args.threads, args.repeats, workdir)
    if not args.skip_keras:
        tf_res = _keras_child("tensorflow", path, args.batch, args.steps, args.threads, max(5, args.repeats // 2))
        print(
            f"{'Keras 3 on TensorFlow, predict':32s} {tf_res['predict'] * 1e3:9.2f} ms  speed-up of converted = {tf_res['predict'] / conv:.2f}x (target >= 1.5)"
        )
        print(
            f"{'Keras 3 on TensorFlow, model(x)':32s} {tf_res['call'] * 1e3:9.2f} ms  speed-up of converted = {tf_res['call'] / conv:.2f}x"
        )
        try:
            torch_res = _keras_child("torch", path, args.batch, args.steps, args.threads, max(5, args.repeats // 2))
            print(
                f"{'Keras 3 on torch, predict':32s} {torch_res['predict'] * 1e3:9.2f} ms  speed-up of converted = {torch_res['predict'] / conv:.2f}x"
            )
            print(
                f"{'Keras 3 on torch, model(x)':32s} {torch_res['call'] * 1e3:9.2f} ms  speed-up of converted = {torch_res['call'] / conv:.2f}x"
            )
        except subprocess.CalledProcessError as err_:
            print(f"Keras 3 on torch: failed to run ({err_.stderr.strip().splitlines()[-1] if err_.stderr else err_})")
    load = _load_time(path, 7)
    print(
        f"file -> ready module: {size_mb:.1f} MB .keras in {load['load'] * 1e3:.0f} ms median (target <= 500 ms); "
        f"package import {load['import'] * 1e3:.0f} ms; tensorflow imported: {load['tensorflow_imported']}; "
        f"keras imported: {load['keras_imported']}"
    )


if __name__ == "__main__":
    main()
