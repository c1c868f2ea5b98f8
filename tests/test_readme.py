"""The README's Python snippets run as written (in order, sharing one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["seen"]["lstm"].shape == (2, 64)
    assert tuple(namespace["forget"][0].shape) == (2, 4, 64)
    assert tuple(namespace["saliency"].shape) == (2, 4, 100)
    tlp, model, padded = namespace["tlp"], namespace["model"], namespace["padded"]
    clamped = tlp.intervene(model, padded, {"lstm/gates/f": tlp.set_units(1.0)})["output"]
    assert namespace["remembered"].equal(clamped)  # the replacing hook equals its edit, as the README says
    assert tuple(namespace["per_word"].shape) == (2, 4) and float(namespace["delta"].abs().max()) < 1e-5
    assert abs(namespace["cell_delta"]).max() < 1e-5  # the custom peephole cell matches Keras


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert commands[0].strip() == "bash scripts/setup_env.sh && .venv/bin/torch-lstm-probe demo"
    assert commands[1].strip() == "bash scripts/setup_env.sh test && .venv/bin/python -m pytest -q -n 2"
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci


def test_readme_probe_key_table_is_the_grammar():
    """The README's table of probe keys is the one the code uses (capture/keys.py), word for word."""
    from torch_lstm_probe.capture.keys import key_table

    assert key_table() in README.read_text(encoding="utf-8")


def test_probe_help_lists_every_key_pattern(capsys):
    from torch_lstm_probe.capture.keys import KEY_GRAMMAR
    from torch_lstm_probe.cli import build_parser

    try:
        build_parser().parse_args(["probe", "--help"])
    except SystemExit:
        pass
    text = capsys.readouterr().out
    for pattern, _ in KEY_GRAMMAR:
        assert pattern in text
