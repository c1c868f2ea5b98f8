"""The one probe-key grammar: what every key means, how requests match keys, how keys are built.

The README, the CLI help, ``probe``, ``extract`` and the activation index all read the grammar
from here, so the words and the rules cannot drift apart.
"""

from __future__ import annotations

import re

__all__ = ["KEY_GRAMMAR", "GATE_MEANINGS", "key_table", "key_meaning", "matches", "layer_key", "split_key"]

# (pattern, meaning), in the order the README shows them.
KEY_GRAMMAR: tuple[tuple[str, str], ...] = (
    ("<layer>", "output of a layer with one output"),
    (
        "<layer>:<k>",
        "k-th output (0-based) of a layer with several outputs, e.g. `return_state` gives `lstm:0` (output), "
        "`lstm:1` (h), `lstm:2` (c); `Bidirectional(merge_mode=None)` likewise",
    ),
    (
        "<layer>@<n>",
        "a layer called more than once (shared layer): its n-th call (0-based), combined with `:<k>` as "
        "`<layer>@<n>:<k>`",
    ),
    (
        "<layer>/gates/<g>",
        "with `gates=True`: an LSTM's g in `i f g o c h`, a GRU's in `z r n h`, a SimpleRNN's `h`; "
        "each (batch, time, units), in processing order",
    ),
    (
        "<layer>/forward/gates/<g>, <layer>/backward/gates/<g>",
        "the two directions of a Bidirectional recurrent layer (the backward half in its own, reversed, order)",
    ),
    ("<model>/<layer>", "a layer inside a nested model (a model used as a layer)"),
    ("<layer>/mask", "with `gates=True`: the bool (batch, time) mask a recurrent layer applied, in input time order"),
    (
        "<layer>/scores",
        "with `gates=True`: the attention weights of an attention layer (the softmax Keras returns with "
        "`return_attention_scores`), (batch, query steps, value steps), with a heads axis after the batch for "
        "`MultiHeadAttention`/`GroupQueryAttention`",
    ),
)

# What each gate or state is, by cell kind; ``act``/``sigma`` are the layer's activation and
# recurrent_activation.
GATE_MEANINGS: dict[str, dict[str, str]] = {
    "LSTM": {
        "i": "input gate i = sigma(z_i)",
        "f": "forget gate f = sigma(z_f)",
        "g": "candidate g = act(z_c)",
        "o": "output gate o = sigma(z_o)",
        "c": "cell state c_t = f c_{t-1} + i g",
        "h": "hidden state h_t = o act(c_t)",
    },
    "GRU": {
        "z": "update gate z = sigma(z_z)",
        "r": "reset gate r = sigma(z_r)",
        "n": "candidate n = act(...)",
        "h": "hidden state h_t = z h_{t-1} + (1 - z) n",
    },
    "SimpleRNN": {"h": "hidden state h_t = act(x W + h_{t-1} U + b)"},
}

_GATE_KEY = re.compile(r"^(?P<layer>.+?)(?P<half>/forward|/backward)?/gates/(?P<gate>[a-z])$")


def key_table() -> str:
    """The grammar as a Markdown table (the README's table is this text)."""
    rows = ["| key | what |", "| --- | --- |"]
    for pattern, meaning in KEY_GRAMMAR:
        shown = ", ".join(f"`{p.strip()}`" for p in pattern.split(","))
        rows.append(f"| {shown} | {meaning} |")
    return "\n".join(rows)


def key_meaning(key: str, cell: str | None = None) -> str:
    """A sentence saying what ``key`` holds (for the activation index and the CLI)."""
    gate = _GATE_KEY.match(key)
    if gate:
        half = f"{gate['half'][1:]} half, " if gate["half"] else ""
        what = GATE_MEANINGS.get(cell or "", {}).get(gate["gate"], f"gate {gate['gate']}")
        return f"{what}; (time, units) per sample, {half}processing order"
    if key.endswith("/mask"):
        return "bool (time,) mask the recurrent layer applied, input time order"
    if key.endswith("/scores"):
        return (
            "attention weights ([heads,] query steps, value steps) per sample; each row sums to 1 over the value steps"
        )
    if ":" in key.rsplit("/", 1)[-1]:
        return f"output {key.rsplit(':', 1)[1]} of a layer with several outputs"
    return "layer output"


def matches(key: str, request: str) -> bool:
    """Whether probe key ``key`` is selected by ``request`` (a layer name, a path or a full key).

    ``"lstm"`` selects ``lstm``, ``lstm:1``, ``lstm@0`` and ``lstm/gates/f`` but not ``lstm_1``.
    """
    return key == request or key.startswith((request + ":", request + "@", request + "/"))


def layer_key(path: str, call: int, calls: int, sub: str = "", output: int | None = None) -> str:
    """The key of one captured value: ``path[@call][sub]`` or ``path[@call]:output``."""
    base = f"{path}@{call}" if calls > 1 else path
    if sub:
        return base + sub
    return base if output is None else f"{base}:{output}"


def split_key(key: str) -> tuple[str, str]:
    """``(layer path, rest)`` of a gate or mask key, e.g. ``("enc/lstm", "/backward/gates/f")``."""
    for marker in ("/forward/gates/", "/backward/gates/", "/gates/"):
        head, sep, tail = key.rpartition(marker)
        if sep and "/" not in tail:
            return head, sep + tail
    if key.endswith("/mask"):
        return key[: -len("/mask")], "/mask"
    return key, ""
