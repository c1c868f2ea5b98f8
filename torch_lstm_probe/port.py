"""Writes a converted model out as standalone PyTorch source: one ``nn.Module`` class plus weights.

``port(model, outdir)`` writes ``outdir/model.py`` (imports only torch and safetensors) and
``outdir/model.safetensors`` (the weights under the generated module's own state_dict names).
``model.py`` defines the class, named after the Keras model in CamelCase, whose attributes are the
Keras layer names, and ``load(path=None)``, which builds it, loads the weights beside the file and
returns it in eval mode. Its ``forward`` is written out straight-line from the graph, one statement
per layer call in execution order with a shape comment, masks included as plain bool tensors.

Standard PyTorch layers stand wherever Keras semantics allow (``nn.LSTM(batch_first=True)``,
``nn.GRU`` for ``reset_after`` GRUs with sigmoid/tanh, ``nn.RNN``, ``nn.Embedding``, ``nn.Linear``,
``nn.Conv1d``, ``nn.LayerNorm``, ``nn.BatchNorm1d``); small explicit helpers are emitted where they
do not (recurrent cells with other activations, GRUs with ``reset_after=False``, masked sequences),
and only those a given model needs.

The generator is pure: it reads the converted :class:`~torch_lstm_probe.model.KerasModel`, its
layers' configs and weights. Each runtime layer class has one emitter in :data:`EMITTERS`; a layer
or option without an emitter raises :class:`~torch_lstm_probe.errors.PortError` naming the layer,
never wrong code.
"""

from __future__ import annotations

import functools
import keyword
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import PortError
from .layers.bidirectional import Bidirectional
from .layers.conv import AveragePooling1D, Conv1D, GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D
from .layers.core import Activation, Dense, Dropout, Embedding, Masking, TimeDistributed
from .layers.gru import GRU
from .layers.lstm import LSTM
from .layers.merge import Concatenate, Merge
from .layers.normalization import BatchNormalization, LayerNormalization
from .layers.reshape import Flatten, Permute, RepeatVector, Reshape
from .layers.simple_rnn import SimpleRNN
from .model import KerasModel
from .verify import embedding_reading

__all__ = ["port", "port_source", "EMITTERS"]

LINE = 88  # ruff's default line length: generated lines stay within it, so any project's ruff keeps them
_INDENT = " " * 8  # statements inside forward

# Runtime activation names -> a callable expression in the generated code (None: needs a helper).
_ACT_CALLABLE: dict[str, str] = {
    "linear": "identity",
    "sigmoid": "torch.sigmoid",
    "tanh": "torch.tanh",
    "relu": "torch.relu",
    "relu6": "F.relu6",
    "elu": "F.elu",
    "selu": "F.selu",
    "softsign": "F.softsign",
    "softplus": "F.softplus",
    "swish": "F.silu",
    "exponential": "torch.exp",
    "mish": "F.mish",
    "keras2_hard_sigmoid": "hard_sigmoid",
    "keras3_hard_sigmoid": "F.hardsigmoid",
    "gelu_erf": "F.gelu",
    "hard_tanh": "F.hardtanh",
    "celu": "F.celu",
    "log_sigmoid": "F.logsigmoid",
    "tanh_shrink": "F.tanhshrink",
}

# Helper functions the generated file may need, in the order they are written; each only when used.
_HELPERS: dict[str, str] = {
    "identity": '''
def identity(x: torch.Tensor) -> torch.Tensor:
    """The linear activation."""
    return x
''',
    "hard_sigmoid": '''
def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 2's hard sigmoid: clip(0.2 x + 0.5, 0, 1) (Keras 3's is F.hardsigmoid)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)
''',
    "masked_rnn": '''
def masked_rnn(rnn, x, mask, hx=None, zero_output=False):
    """Runs a batch-first nn.LSTM/GRU/RNN on the real steps of each row only, as Keras does.

    Keras skips a step whose mask is False: the state is carried over it and the output
    repeats the previous output (0 before the first real step; always 0 with zero_output).
    Skipping a step is the same as never running it, so each row's real steps move to the
    front in order, the fused kernel runs on them as a packed sequence, and one gather
    puts every step back in place. Works for any mask: padding on either side, holes.

    Shapes: x (N, L, F), mask (N, L) bool -> output (N, L, H) and the final state(s),
    each (1, N, H), as the rnn returns them.
    """
    steps = x.shape[1]
    lengths = mask.sum(1)  # (N,) real steps per row
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # (N, L)
    compact = x.gather(1, order[..., None].expand_as(x))  # (N, L, F), real steps first
    packed = pack_padded_sequence(
        compact, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
    )
    y, final = rnn(packed, hx)
    y, _ = pad_packed_sequence(y, batch_first=True, total_length=steps)  # (N, L, H)
    source = mask.long().cumsum(1) - 1  # (N, L): compact step of the last real one
    y = y.gather(1, source.clamp(min=0)[..., None].expand(-1, -1, y.shape[-1]))
    empty = ~mask if zero_output else source < 0  # (N, L): steps that output 0
    y = y.masked_fill(empty[..., None], 0.0)
    real = (lengths > 0)[None, :, None]  # (1, N, 1): rows without real steps keep hx
    if isinstance(final, tuple):
        start = hx if hx is not None else tuple(torch.zeros_like(s) for s in final)
        final = tuple(torch.where(real, s, s0) for s, s0 in zip(final, start))
    else:
        start = hx if hx is not None else torch.zeros_like(final)
        final = torch.where(real, final, start)
    return y, final
''',
    "lstm_loop": '''
def lstm_loop(
    lstm, x, hx=None, mask=None, act=torch.tanh, ract=torch.sigmoid, zero_output=False
):
    """A Keras LSTM step by step, with any activations, on nn.LSTM's weights.

    i, f, o = ract(z_i), ract(z_f), ract(z_o); g = act(z_g) where z = x W_ih^T + h W_hh^T + b;
    c_t = f c_{t-1} + i g; h_t = o act(c_t). Where mask (N, L) is False, the state is
    carried and the output repeats the previous one (0 with zero_output), as in Keras.

    Shapes: x (N, L, F) -> output (N, L, H) and (h, c), each (1, N, H), as nn.LSTM returns.
    """
    n, steps, _ = x.shape
    zeros = x.new_zeros(n, lstm.hidden_size)
    h, c = (zeros, zeros) if hx is None else (hx[0][0], hx[1][0])
    bias = lstm.bias_ih_l0 + lstm.bias_hh_l0 if lstm.bias else None
    xz = F.linear(x, lstm.weight_ih_l0, bias)  # (N, L, 4H), gates [i, f, g, o]
    out, outputs = zeros, []
    for t in range(steps):
        z = xz[:, t] + h @ lstm.weight_hh_l0.t()  # (N, 4H)
        zi, zf, zg, zo = z.chunk(4, 1)
        c_t = ract(zf) * c + ract(zi) * act(zg)
        h_t = ract(zo) * act(c_t)
        if mask is None:
            h, c, out = h_t, c_t, h_t
        else:
            real = mask[:, t, None]  # (N, 1)
            h, c = torch.where(real, h_t, h), torch.where(real, c_t, c)
            out = torch.where(real, h_t, zeros if zero_output else out)
        outputs.append(out)
    return torch.stack(outputs, 1), (h[None], c[None])
''',
    "gru_loop": '''
def gru_loop(
    gru,
    x,
    hx=None,
    mask=None,
    act=torch.tanh,
    ract=torch.sigmoid,
    reset_after=True,
    zero_output=False,
):
    """A Keras GRU step by step, with any activations and either reset_after, on nn.GRU's weights.

    Gate blocks are nn.GRU's [r, z, n]: r, z = ract(x W + b + h U); the candidate is
    n = act(x W_n + b_in + r * (h U_n + b_hn)) with reset_after (nn.GRU's formula), else
    n = act(x W_n + b_in + b_hn + (r * h) U_n); h_t = z h + (1 - z) n. Where mask (N, L)
    is False, the state is carried and the output repeats the previous one, as in Keras.

    Shapes: x (N, L, F) -> output (N, L, H) and h (1, N, H), as nn.GRU returns.
    """
    n_rows, steps, _ = x.shape
    zeros = x.new_zeros(n_rows, gru.hidden_size)
    h = zeros if hx is None else hx[0]
    b_ih = gru.bias_ih_l0 if gru.bias else torch.zeros_like(gru.weight_ih_l0[:, 0])
    b_hh = gru.bias_hh_l0 if gru.bias else torch.zeros_like(b_ih)
    b_x = b_ih if reset_after else b_ih + b_hh  # outside r: both biases before reset
    xp = F.linear(x, gru.weight_ih_l0, b_x)  # (N, L, 3H)
    u_rz, u_n = gru.weight_hh_l0.split([2 * gru.hidden_size, gru.hidden_size])
    out, outputs = zeros, []
    for t in range(steps):
        xr, xz, xn = xp[:, t].chunk(3, 1)  # (N, H) each
        if reset_after:
            hr, hz, hn = F.linear(h, gru.weight_hh_l0, b_hh).chunk(3, 1)
            r, z = ract(xr + hr), ract(xz + hz)
            cand = act(xn + r * hn)
        else:
            hr, hz = (h @ u_rz.t()).chunk(2, 1)
            r, z = ract(xr + hr), ract(xz + hz)
            cand = act(xn + (r * h) @ u_n.t())
        h_t = z * h + (1 - z) * cand
        if mask is None:
            h, out = h_t, h_t
        else:
            real = mask[:, t, None]  # (N, 1)
            h = torch.where(real, h_t, h)
            out = torch.where(real, h_t, zeros if zero_output else out)
        outputs.append(out)
    return torch.stack(outputs, 1), h[None]
''',
    "rnn_loop": '''
def rnn_loop(rnn, x, hx=None, mask=None, act=torch.tanh, zero_output=False):
    """A Keras SimpleRNN step by step, with any activation, on nn.RNN's weights.

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh). Where mask (N, L) is False, the
    state is carried and the output repeats the previous one, as in Keras.

    Shapes: x (N, L, F) -> output (N, L, H) and h (1, N, H), as nn.RNN returns.
    """
    n, steps, _ = x.shape
    zeros = x.new_zeros(n, rnn.hidden_size)
    h = zeros if hx is None else hx[0]
    bias = rnn.bias_ih_l0 + rnn.bias_hh_l0 if rnn.bias else None
    xp = F.linear(x, rnn.weight_ih_l0, bias)  # (N, L, H)
    out, outputs = zeros, []
    for t in range(steps):
        h_t = act(xp[:, t] + h @ rnn.weight_hh_l0.t())
        if mask is None:
            h, out = h_t, h_t
        else:
            real = mask[:, t, None]  # (N, 1)
            h = torch.where(real, h_t, h)
            out = torch.where(real, h_t, zeros if zero_output else out)
        outputs.append(out)
    return torch.stack(outputs, 1), h[None]
''',
}

_RESERVED = {"self", "torch", "F", "nn", "Path", "load", "load_file", "pack_padded_sequence", "pad_packed_sequence"}
_RESERVED |= set(_HELPERS) | set(dir(__builtins__) if isinstance(__builtins__, dict) else dir(__builtins__))


def _identifier(name: str, fallback: str = "layer") -> str:
    """``name`` as a Python identifier: other characters become ``_``; keywords get a ``_`` suffix."""
    text = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_") or fallback
    if text[0].isdigit():
        text = f"{fallback}_{text}"
    return text + "_" if keyword.iskeyword(text) else text


def _camel(name: str) -> str:
    """The class name: ``lstm_default_u3`` -> ``LstmDefaultU3``."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "KerasModel"
    return "Model" + text if text[0].isdigit() else text


# ---------------------------------------------------------------------------------------- generator
@dataclass
class _Call:
    """One layer call as an emitter sees it."""

    name: str  # Keras layer name
    module: Any  # the runtime module (its config and weights are read)
    attr: str  # the expression of its submodule in forward, e.g. "self.lstm"
    key: str  # its state_dict prefix, e.g. "lstm"
    xs: list[str]  # input variables
    masks: list[str | None]  # the Keras mask variable of each input (None: no mask)
    outs: list[str]  # variables to assign, one per output
    shapes: list[str | None]  # each output's shape comment
    initial_state: list[str] | None = None  # initial_state variables
    apply_mask: bool = True  # False: the recurrent layer runs unmasked (Keras 3 with initial_state)
    in_shape: tuple[int, ...] = ()  # the first input's shape in the trace run

    @property
    def rank(self) -> int:
        """The rank of the first input."""
        return len(self.in_shape)

    @property
    def mask(self) -> str | None:
        """The mask of the only input, if any."""
        return self.masks[0] if len(self.masks) == 1 else None

    def where(self) -> str:
        return f"layer {self.name!r} ({type(self.module).__name__})"


@dataclass
class _Generator:
    """Collects the pieces of model.py while the emitters run."""

    init: list[str] = field(default_factory=list)  # lines of __init__ after super().__init__()
    body: list[tuple[list[str], str | None]] = field(default_factory=list)  # forward statements, mask var defined
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    helpers: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=lambda: set(_RESERVED))

    def fresh(self, base: str) -> str:
        """A new local variable name from ``base``."""
        name = _identifier(base)
        candidate, k = name, 1
        while candidate in self.names:
            candidate = f"{name}_{k}"
            k += 1
        self.names.add(candidate)
        return candidate

    def line(
        self,
        code: str,
        comment: str | None = None,
        defines_mask: str | None = None,
        call: tuple[str, str, list[str]] | None = None,
    ) -> None:
        """One forward statement, kept as ruff formats it: the comment inline when the line fits,
        else above it; a statement too long for one line is split as ruff splits it.

        Args:
            call: ``(target, callee, args)`` when ``code`` is ``target = callee(*args)``: a long
                call is split between its arguments.
        """
        if comment and len(_INDENT + code + "  # " + comment) <= LINE:
            self.body.append(([f"{code}  # {comment}"], defines_mask))
            return
        lines = [f"# {comment}"] if comment else []
        if len(_INDENT + code) <= LINE:
            lines.append(code)
        elif (
            call is not None
            and not (len(call[2]) == 1 and call[2][0].isidentifier())
            and len(f"{_INDENT}{call[0]} = {call[1]}(") <= LINE
        ):
            target, callee, args = call
            lines += [line[len(_INDENT) :] for line in _wrap(f"{target} = {callee}(", args, ")", _INDENT)]
        else:
            target, _, rhs = code.partition(" = ")
            lines += [f"{target} = (", f"    {rhs}", ")"]
        self.body.append((lines, defines_mask))

    def call(self, target: str, callee: str, args: list[str], comment: str | None = None) -> None:
        """The statement ``target = callee(*args)``."""
        self.line(f"{target} = {callee}({', '.join(args)})", comment, call=(target, callee, args))

    def weights(self, key: str, module: nn.Module, names: Sequence[str] | None = None) -> None:
        """Copies ``module``'s parameters/buffers (all, or ``names``) under ``key``."""
        own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
        for name in names if names is not None else list(own):
            value = own[name]
            if value is None:
                continue
            self.state[f"{key}.{name}"] = value.detach().to("cpu").clone().contiguous()

    def use(self, helper: str) -> str:
        self.helpers.add(helper)
        return helper


Emitter = Callable[[_Generator, _Call], list[str | None]]  # writes the call; returns each output's mask


def _act_call(g: _Generator, call: _Call, name: str, what: str) -> str:
    """A callable expression for runtime activation ``name`` (a helper is emitted when needed)."""
    expr = _ACT_CALLABLE.get(name)
    if expr is None:
        raise PortError(
            f"Cannot port {call.where()}: its {what} {name!r} has no plain PyTorch spelling here. "
            f"Supported: {', '.join(sorted(_ACT_CALLABLE))}. Fix: port by hand, or use tlp.load_keras."
        )
    if expr in _HELPERS:
        g.use(expr)
    return expr


def _apply_act(g: _Generator, call: _Call, name: str, value: str) -> str:
    """``value`` with activation ``name`` applied, as an expression."""
    if name == "linear":
        return value
    if name == "softmax":
        return f"torch.softmax({value}, dim=-1)"
    if name == "log_softmax":
        return f"torch.log_softmax({value}, dim=-1)"
    return f"{_act_call(g, call, name, 'activation')}({value})"


def _activated_call(
    g: _Generator,
    call: _Call,
    activation: str,
    target: str,
    callee: str,
    args: list[str],
    comment: str | None = None,
) -> None:
    """``target = act(callee(*args))``, split as ruff would split it."""
    inner = f"{callee}({', '.join(args)})"
    if activation == "linear":
        g.call(target, callee, args, comment)
    elif activation in ("softmax", "log_softmax"):
        g.call(target, f"torch.{activation}", [inner, "dim=-1"], comment)
    else:
        g.call(target, _act_call(g, call, activation, "activation"), [inner], comment)


def _refuse(call: _Call, option: str, fix: str) -> PortError:
    return PortError(f"Cannot port {call.where()}: {option}. Fix: {fix}.")


# ---------------------------------------------------------------------------------------- emitters
def _emit_dense(g: _Generator, call: _Call) -> list[str | None]:
    cfg = call.module.config
    bias = "" if cfg.use_bias else ", bias=False"
    g.init.append(f"{call.attr} = nn.Linear({cfg.in_features}, {cfg.out_features}{bias})")
    g.weights(call.key, call.module, ["weight", "bias"] if cfg.use_bias else ["weight"])
    _activated_call(g, call, cfg.activation, call.outs[0], call.attr, [call.xs[0]], call.shapes[0])
    return [call.mask]


def _emit_embedding(g: _Generator, call: _Call) -> list[str | None]:
    cfg = call.module.config
    g.init.append(f"{call.attr} = nn.Embedding({cfg.num_embeddings}, {cfg.embedding_dim})")
    g.weights(call.key, call.module, ["weight"])
    g.call(call.outs[0], call.attr, [call.xs[0]], call.shapes[0])
    if not cfg.mask_zero:
        return [None]
    mask = g.fresh(f"{call.outs[0]}_mask")
    g.line(f"{mask} = {call.xs[0]} != 0", "(N, L): True at real tokens (mask_zero)", defines_mask=mask)
    return [mask]


def _emit_identity(g: _Generator, call: _Call) -> list[str | None]:
    g.line(f"{call.outs[0]} = {call.xs[0]}", f"{type(call.module).__name__}: identity at inference")
    return [call.mask if getattr(call.module, "mask_mode", "pass") == "pass" else None]


def _emit_activation(g: _Generator, call: _Call) -> list[str | None]:
    act = call.module.config.activation
    g.line(f"{call.outs[0]} = {_apply_act(g, call, act, call.xs[0])}", call.shapes[0])
    return [call.mask]


def _emit_masking(g: _Generator, call: _Call, shape: Sequence[Any] | None = None) -> list[str | None]:
    value = float(call.module.config.mask_value)
    x = call.xs[0]
    mask = g.fresh(f"{call.outs[0]}_mask")
    g.line(f"{mask} = ({x} != {value!r}).any(-1)", f"(N, L): steps not all {value!r}", defines_mask=mask)
    g.line(f"{call.outs[0]} = {x} * {mask}[..., None]", call.shapes[0])
    return [mask]


def _emit_time_distributed(g: _Generator, call: _Call) -> list[str | None]:
    inner = call.module.layer
    emitter = EMITTERS.get(type(inner))
    if emitter is None or type(inner) in (LSTM, GRU, SimpleRNN, Bidirectional, TimeDistributed):
        raise _refuse(call, f"TimeDistributed({type(inner).__name__}) has no port", "port by hand")
    if isinstance(inner, Dense):  # nn.Linear works on any rank
        return emitter(g, _Call(call.name, inner, call.attr, call.key, call.xs, call.masks, call.outs, call.shapes))
    x = call.xs[0]
    steps = g.fresh("steps")
    g.line(f"{steps} = {x}.flatten(0, 1)", "TimeDistributed: every step as a sample, (N*L, ...)")
    emitter(g, _Call(call.name, inner, call.attr, call.key, [steps], [None], [steps], [None]))
    g.line(f"{call.outs[0]} = {steps}.unflatten(0, (-1, {x}.shape[1]))", call.shapes[0])
    return [call.mask]


def _emit_conv1d(g: _Generator, call: _Call) -> list[str | None]:
    cfg = call.module.config
    if cfg.channels_first:
        raise _refuse(call, "data_format='channels_first' is not ported", "use channels_last")
    if cfg.padding == "same" and cfg.stride != 1:
        raise _refuse(call, "padding='same' with strides > 1 depends on the length", "port by hand")
    args = [str(cfg.in_channels), str(cfg.out_channels), str(cfg.kernel_size)]
    for key, default in (("stride", 1), ("dilation", 1), ("groups", 1)):
        if getattr(cfg, key) != default:
            args.append(f"{key}={getattr(cfg, key)}")
    if not cfg.use_bias:
        args.append("bias=False")
    g.init.append(f"{call.attr} = nn.Conv1d({', '.join(args)})")
    g.weights(call.key, call.module, ["weight", "bias"] if cfg.use_bias else ["weight"])
    span = (cfg.kernel_size - 1) * cfg.dilation
    pad = {"valid": (0, 0), "causal": (span, 0), "same": (span // 2, span - span // 2)}[cfg.padding]
    out = call.outs[0]
    g.line(f"{out} = {call.xs[0]}.transpose(1, 2)", "channels first, (N, C, L)")
    if any(pad):
        g.call(out, "F.pad", [out, str(pad)], f"{cfg.padding} padding")
    _activated_call(g, call, cfg.activation, out, call.attr, [out])
    g.line(f"{out} = {out}.transpose(1, 2)", call.shapes[0])
    return [None]


def _emit_pooling(g: _Generator, call: _Call) -> list[str | None]:
    cfg = call.module.config
    if cfg.channels_first or cfg.padding != "valid":
        raise _refuse(call, f"padding={cfg.padding!r}/channels_first is not ported", "use padding='valid'")
    fn = "F.max_pool1d" if isinstance(call.module, MaxPooling1D) else "F.avg_pool1d"
    x = call.xs[0]
    out = call.outs[0]
    g.call(out, fn, [f"{x}.transpose(1, 2)", str(cfg.pool_size), str(cfg.stride)], "(N, C, L')")
    g.line(f"{out} = {out}.transpose(1, 2)", call.shapes[0])
    return [None]


def _emit_global_pooling(g: _Generator, call: _Call) -> list[str | None]:
    cfg = call.module.config
    if cfg.channels_first:
        raise _refuse(call, "data_format='channels_first' is not ported", "use channels_last")
    x, keep = call.xs[0], ", keepdim=True" if cfg.keepdims else ""
    if isinstance(call.module, GlobalMaxPooling1D):
        g.line(f"{call.outs[0]} = {x}.amax(dim=1{keep})", call.shapes[0])
    elif call.mask is None:
        g.line(f"{call.outs[0]} = {x}.mean(dim=1{keep})", call.shapes[0])
    else:
        m = call.mask
        g.line(f"{call.outs[0]} = torch.where({m}[..., None], {x}, 0.0).sum(1{keep})", "masked mean:")
        g.line(f"{call.outs[0]} = {call.outs[0]} / {m}.sum(1, keepdim=True)", call.shapes[0])
    return [None]


def _emit_merge(g: _Generator, call: _Call) -> list[str | None]:
    op = call.module.config.op
    if any(m is not None for m in call.masks):
        raise _refuse(call, "a merge of masked inputs is not ported", "port by hand")
    xs = call.xs
    if op in ("add", "average"):
        expr = " + ".join(xs)
        expr = f"({expr}) / {len(xs)}" if op == "average" else expr
    elif op == "subtract":
        expr = f"{xs[0]} - {xs[1]}"
    elif op == "multiply":
        expr = " * ".join(xs)
    else:
        expr = xs[0]
        for x in xs[1:]:
            expr = f"torch.{op}({expr}, {x})"
    g.line(f"{call.outs[0]} = {expr}", call.shapes[0])
    return [None]


def _emit_concatenate(g: _Generator, call: _Call) -> list[str | None]:
    if any(m is not None for m in call.masks):
        raise _refuse(call, "a concatenation of masked inputs is not ported", "port by hand")
    axis = call.module.config.axis
    g.call(call.outs[0], "torch.cat", [f"[{', '.join(call.xs)}]", f"dim={axis}"], call.shapes[0])
    return [None]


def _emit_batch_norm(g: _Generator, call: _Call) -> list[str | None]:
    cfg = call.module.config
    rank = call.rank
    last = len(cfg.axes) == 1 and cfg.axes[0] in (-1, rank - 1) and len(cfg.param_shape) == 1
    if not last or rank not in (2, 3) or cfg.center != cfg.scale:
        raise _refuse(call, f"BatchNormalization over axes {cfg.axes} of a rank-{rank} input", "port by hand")
    affine = "" if cfg.scale else ", affine=False"
    g.init.append(f"{call.attr} = nn.BatchNorm1d({cfg.param_shape[0]}, eps={cfg.epsilon!r}{affine})")
    g.weights(call.key, call.module, (["weight", "bias"] if cfg.scale else []) + ["running_mean", "running_var"])
    g.state[f"{call.key}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    x = call.xs[0]
    if rank == 2:
        g.call(call.outs[0], call.attr, [x], call.shapes[0])
    else:
        g.call(call.outs[0], call.attr, [f"{x}.transpose(1, 2)"], "over channels, (N, C, L)")
        g.line(f"{call.outs[0]} = {call.outs[0]}.transpose(1, 2)", call.shapes[0])
    return [call.mask]


def _emit_layer_norm(g: _Generator, call: _Call) -> list[str | None]:
    cfg = call.module.config
    rank = call.rank
    last = len(cfg.axes) == 1 and cfg.axes[0] in (-1, rank - 1)
    if not last or cfg.rms_scaling or cfg.center != cfg.scale:
        raise _refuse(call, f"LayerNormalization over axes {cfg.axes} (rms_scaling={cfg.rms_scaling})", "port by hand")
    size = call.in_shape[-1]
    affine = "" if cfg.scale else ", elementwise_affine=False"
    g.init.append(f"{call.attr} = nn.LayerNorm({size}, eps={cfg.epsilon!r}{affine})")
    if cfg.scale:
        g.weights(call.key, call.module, ["weight", "bias"])
    g.call(call.outs[0], call.attr, [call.xs[0]], call.shapes[0])
    return [call.mask]


def _emit_reshape(g: _Generator, call: _Call) -> list[str | None]:
    x, module = call.xs[0], call.module
    if isinstance(module, Reshape):
        dims = ", ".join(str(d) for d in module.config.target_shape)
        g.line(f"{call.outs[0]} = {x}.reshape({x}.shape[0], {dims})", call.shapes[0])
    elif isinstance(module, Flatten):
        if module.config.channels_first:
            raise _refuse(call, "Flatten with data_format='channels_first' is not ported", "port by hand")
        g.line(f"{call.outs[0]} = {x}.flatten(1)", call.shapes[0])
    elif isinstance(module, Permute):
        dims = ", ".join(str(d) for d in module.config.dims)
        g.line(f"{call.outs[0]} = {x}.permute(0, {dims})", call.shapes[0])
    else:
        g.line(f"{call.outs[0]} = {x}[:, None].repeat(1, {module.config.n}, 1)", call.shapes[0])
    return [None]


# ------------------------------------------------------------------ recurrent layers
_RNN_CLASS = {LSTM: "nn.LSTM", GRU: "nn.GRU", SimpleRNN: "nn.RNN"}


def _recurrent(
    g: _Generator,
    call: _Call,
    module: Any,
    attr: str,
    key: str,
    outs: list[str],
    shapes: list[str | None],
    initial_state: list[str] | None,
    mask: str | None,
) -> str:
    """Writes one recurrent layer's call into ``outs`` (output, then states); returns its constructor."""
    cfg = module.config
    kind = type(module)
    if cfg.stateful:
        raise _refuse(call, "stateful=True is not ported (the state would have to live in the module)", "port by hand")
    if cfg.time_major and mask is not None:
        raise _refuse(call, "a time_major layer with a mask is not ported", "feed batch-major inputs")
    act = cfg.activation
    ract = getattr(cfg, "recurrent_activation", None)
    if kind is LSTM:
        fused = act == "tanh" and ract == "sigmoid"
    elif kind is GRU:
        fused = cfg.reset_after and act == "tanh" and ract == "sigmoid"
    else:
        fused = act in ("tanh", "relu")
    if cfg.time_major and not fused:
        raise _refuse(call, "a time_major layer with non-default activations is not ported", "feed batch-major inputs")
    args = [str(cfg.input_size), str(cfg.hidden_size)]
    if kind is SimpleRNN and fused and act == "relu":
        args.append('nonlinearity="relu"')
    if not cfg.use_bias:
        args.append("bias=False")
    if not cfg.time_major:
        args.append("batch_first=True")
    ctor = f"{_RNN_CLASS[kind]}({', '.join(args)})"
    g.weights(key, module, [n for n, _ in module.named_parameters(recurse=False)])

    time_axis = 0 if cfg.time_major else 1
    x = call.xs[0]
    if cfg.go_backwards:
        x = f"{x}.flip({time_axis})"
        mask = f"{mask}.flip(1)" if mask is not None else None
    states = len(module.STATE_NAMES)
    call_args = [attr, x]  # the module, the input, then keywords
    hx = None
    if initial_state is not None:
        hx = ", ".join(f"{s}[None]" for s in initial_state)
        hx = f"({hx})" if states > 1 else hx
    if fused and mask is None:
        callee, args = attr, [x] + ([hx] if hx else [])
    else:
        if hx is not None:
            call_args.append(hx)
        if mask is not None:
            call_args.append(f"{'' if hx else 'mask='}{mask}")
        if fused:
            callee = g.use("masked_rnn")
        else:
            callee = g.use({LSTM: "lstm_loop", GRU: "gru_loop", SimpleRNN: "rnn_loop"}[kind])
            if act != "tanh":
                call_args.append(f"act={_act_call(g, call, act, 'activation')}")
            if ract is not None and ract != "sigmoid":
                call_args.append(f"ract={_act_call(g, call, ract, 'recurrent_activation')}")
            if kind is GRU and not cfg.reset_after:
                call_args.append("reset_after=False")
        if mask is not None and cfg.zero_output_for_mask:
            call_args.append("zero_output=True")
        args = call_args
    out = outs[0]
    last = "[-1]" if cfg.time_major else "[:, -1]"
    seq_comment = shapes[0] if cfg.return_sequences else None
    if not cfg.return_state:
        g.call(f"{out}, _", callee, args, seq_comment)
    else:
        state_vars = outs[1:]
        target = f"({', '.join(state_vars)})" if states > 1 else state_vars[0]
        g.call(f"{out}, {target}", callee, args, seq_comment)
    if not cfg.return_sequences:
        g.line(f"{out} = {out}{last}", f"{shapes[0]}: the last output" if shapes[0] else "the last output")
    for k, state in enumerate(outs[1:] if cfg.return_state else []):
        g.line(f"{state} = {state}[0]", shapes[k + 1])
    return ctor


def _emit_recurrent(g: _Generator, call: _Call) -> list[str | None]:
    cfg = call.module.config
    mask = call.mask if call.apply_mask else None
    ctor = _recurrent(g, call, call.module, call.attr, call.key, call.outs, call.shapes, call.initial_state, mask)
    g.init.append(f"{call.attr} = {ctor}")
    out_mask = call.mask if cfg.return_sequences else None
    return [out_mask] + [None] * (len(call.outs) - 1)


def _emit_bidirectional(g: _Generator, call: _Call) -> list[str | None]:
    module: Bidirectional = call.module
    fwd: Any = module.forward_layer
    bwd: Any = module.backward_layer
    if type(fwd) not in _RNN_CLASS or type(bwd) not in _RNN_CLASS:
        raise _refuse(call, "a Bidirectional over a custom layer is not ported", "port by hand")
    cfg = fwd.config
    merge = module.config.merge_mode
    n_fwd, n_bwd = len(fwd.STATE_NAMES), len(bwd.STATE_NAMES)
    n_merged = 2 if merge is None else 1
    outs = call.outs
    y_f = outs[0] if merge is None else g.fresh(f"{outs[0]}_fw")
    y_b = outs[1] if merge is None else g.fresh(f"{outs[0]}_bw")
    states = outs[n_merged:]
    init_f = init_b = None
    if call.initial_state is not None:
        init_f, init_b = call.initial_state[:n_fwd], call.initial_state[n_fwd:]
    mask = call.mask if call.apply_mask else None
    seq_shape = call.shapes[0] if merge is None else None
    halves = []
    for name, layer, y, st, init in (
        ("forward_layer", fwd, y_f, states[:n_fwd], init_f),
        ("backward_layer", bwd, y_b, states[n_fwd:], init_b),
    ):
        outs_half = [y, *st] if cfg.return_state else [y]
        shapes = [seq_shape] + [call.shapes[n_merged] if call.shapes[n_merged:] else None] * len(st)
        attr = f"{call.attr}.{name}"
        halves.append(_recurrent(g, call, layer, attr, f"{call.key}.{name}", outs_half, shapes, init, mask))
    g.init.append(f"{call.attr} = nn.ModuleDict(")
    g.init.append("    {")
    g.init.append(f'        "forward_layer": {halves[0]},')
    g.init.append(f'        "backward_layer": {halves[1]},')
    g.init.append("    }")
    g.init.append(")")
    if cfg.return_sequences:
        g.line(f"{y_b} = {y_b}.flip({0 if cfg.time_major else 1})", "backward output back in input order")
    merged = {
        "concat": f"torch.cat([{y_f}, {y_b}], dim=-1)",
        "sum": f"{y_f} + {y_b}",
        "ave": f"({y_f} + {y_b}) / 2",
        "mul": f"{y_f} * {y_b}",
    }
    if merge is not None:
        g.line(f"{outs[0]} = {merged[merge]}", call.shapes[0])
    out_mask = call.mask if cfg.return_sequences else None
    return [out_mask] * n_merged + [None] * (n_fwd + n_bwd)


EMITTERS: dict[type[nn.Module], Emitter] = {
    Dense: _emit_dense,
    Embedding: _emit_embedding,
    Dropout: _emit_identity,
    Activation: _emit_activation,
    Masking: _emit_masking,
    TimeDistributed: _emit_time_distributed,
    Conv1D: _emit_conv1d,
    MaxPooling1D: _emit_pooling,
    AveragePooling1D: _emit_pooling,
    GlobalMaxPooling1D: _emit_global_pooling,
    GlobalAveragePooling1D: _emit_global_pooling,
    Merge: _emit_merge,
    Concatenate: _emit_concatenate,
    BatchNormalization: _emit_batch_norm,
    LayerNormalization: _emit_layer_norm,
    Reshape: _emit_reshape,
    Flatten: _emit_reshape,
    Permute: _emit_reshape,
    RepeatVector: _emit_reshape,
    LSTM: _emit_recurrent,
    GRU: _emit_recurrent,
    SimpleRNN: _emit_recurrent,
    Bidirectional: _emit_bidirectional,
}
"""The one table of emitters, keyed by runtime module class: adding a layer means adding one entry."""


# ---------------------------------------------------------------------------------------- the model
_BATCHES = (2, 3)  # batch sizes of the two trace runs
_STEPS = (5, 6)  # lengths of free (None) axes in the two trace runs


@dataclass
class _Trace:
    """Inputs and per-call shapes of two runs of the converted model (for the shape comments)."""

    inputs: list[list[torch.Tensor]]  # the inputs of each run
    calls: dict[str, list[tuple[list[tuple[int, ...]], list[tuple[int, ...]]]]]  # layer -> [(ins, outs)] of run 0
    shapes: dict[tuple[str, int], list[str]]  # (layer, call) -> each output's shape text


def _trace_inputs(model: KerasModel, run: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(run)
    inputs = []
    for spec in model.input_specs:
        shape = spec.get("shape")
        if shape is None:
            raise PortError(f"Cannot port model {model.name!r}: input {spec['name']!r} has no declared shape.")
        dims = [_BATCHES[run] if shape[0] is None else shape[0]] + [_STEPS[run] if d is None else d for d in shape[1:]]
        if (
            str(spec.get("dtype", "float32")).startswith(("int", "uint"))
            or embedding_reading(model, spec["name"]) is not None
        ):
            inputs.append(torch.randint(0, 2, dims, generator=gen))  # 0 and 1 index any vocabulary; 0 pads
        else:
            inputs.append(torch.randn(dims, generator=gen))
    return inputs


def _shape_text(a: tuple[int, ...], b: tuple[int, ...]) -> str:
    """``(N, 7, 3)``: sizes equal in both runs, N/L where they follow the batch/free axis."""
    dims = []
    for x, y in zip(a, b):
        if x == y:
            dims.append(str(x))
        elif (x, y) == _BATCHES:
            dims.append("N")
        elif (x, y) == _STEPS:
            dims.append("L")
        elif (x, y) == (_BATCHES[0] * _STEPS[0], _BATCHES[1] * _STEPS[1]):
            dims.append("N*L")
        else:
            dims.append("?")
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _record(seen: dict[str, list[Any]], name: str, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
    """Forward hook of the trace run: appends the call's input and output shapes to ``seen[name]``."""
    ins = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
    outs = [tuple(o.shape) for o in (out if isinstance(out, tuple) else (out,))]
    seen.setdefault(name, []).append((ins, outs))


def _trace(model: KerasModel) -> _Trace:
    """Runs the converted model twice and records every layer call's input and output shapes."""
    runs: list[dict[str, list[tuple[list[tuple[int, ...]], list[tuple[int, ...]]]]]] = []
    inputs = []
    for run in range(2):
        seen: dict[str, list[tuple[list[tuple[int, ...]], list[tuple[int, ...]]]]] = {}
        record = functools.partial(_record, seen)
        handles = [
            model.layer(name).register_forward_hook(functools.partial(record, name)) for name in model.layer_names
        ]
        xs = _trace_inputs(model, run)
        try:
            with torch.no_grad():
                model(*xs)
        finally:
            for handle in handles:
                handle.remove()
        runs.append(seen)
        inputs.append(xs)
    shapes = {}
    for name, calls in runs[0].items():
        for k, (_, outs) in enumerate(calls):
            other = runs[1][name][k][1]
            shapes[(name, k)] = [_shape_text(a, b) for a, b in zip(outs, other)]
    return _Trace(inputs, runs[0], shapes)


def _output_names(g: _Generator, module: nn.Module, base: str, count: int) -> list[str]:
    """Local variable names for a call's outputs: the layer name, then its states by name."""
    suffixes = [""]
    if isinstance(module, (LSTM, GRU, SimpleRNN)):
        suffixes += [f"_{s}" for s in module.STATE_NAMES]
    elif isinstance(module, Bidirectional):
        merged = ["_fw", "_bw"] if module.config.merge_mode is None else [""]
        states = [
            f"_{s}_{half}"
            for half, layer in (("fw", module.forward_layer), ("bw", module.backward_layer))
            for s in getattr(layer, "STATE_NAMES", ())
        ]
        suffixes = merged + states
    suffixes += [f"_{k}" for k in range(len(suffixes), count)]
    return [g.fresh(base + s) for s in suffixes[:count]]


def _attribute_names(model: KerasModel) -> dict[str, str]:
    """Each layer's attribute: its Keras name as an identifier, unique, not an nn.Module attribute."""
    taken = set(dir(nn.Module()))
    out = {}
    for name in model.layer_names:
        attr = _identifier(name)
        while attr in taken:
            attr += "_"
        taken.add(attr)
        out[name] = attr
    return out


def _refs(value: Any) -> list[tuple[str, int, int]]:
    """Tensor references inside a node keyword value (one reference or a list of them)."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
        return [(value[0], int(value[1]), int(value[2]))]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs(v)]
    raise PortError(f"Cannot port a layer call with keyword value {value!r}.")


def _build(model: KerasModel) -> tuple[_Generator, list[str], list[str], _Trace]:
    """Runs the emitters over the graph; returns the pieces, the forward parameters and returns."""
    for name, module in model.iter_layers():
        if isinstance(module, KerasModel):
            raise PortError(
                f"Cannot port layer {name!r} (a nested model): nested models are not ported yet. "
                "Fix: flatten the model in Keras, or use tlp.load_keras."
            )
    g = _Generator()
    trace = _trace(model)
    var: dict[tuple[str, int, int], str] = {}
    mask_var: dict[tuple[str, int, int], str | None] = {}
    params = []
    for spec in model.input_specs:
        name = g.fresh(spec["name"])
        var[(spec["name"], 0, 0)] = name
        params.append(name)
    attrs = _attribute_names(model)
    unsupported = sorted(
        {
            f"{node.layer!r} ({type(model.layer(node.layer)).__name__})"
            for node in model._nodes
            if type(model.layer(node.layer)) not in EMITTERS
        }
    )
    if unsupported:  # before writing anything: a later layer would read the missing layer's output
        raise PortError(
            f"Cannot port model {model.name!r}: no plain-PyTorch writer for layer(s) {', '.join(unsupported)}. "
            f"Supported runtime layers: {', '.join(sorted(c.__name__ for c in EMITTERS))}. "
            "Fix: use tlp.load_keras for this model, or add an emitter to torch_lstm_probe.port.EMITTERS."
        )
    for node in model._nodes:
        module = model.layer(node.layer)
        emitter = EMITTERS[type(module)]
        where = f"layer {node.layer!r} ({type(module).__name__})"
        unknown = sorted(set(node.kwargs) - {"initial_state", "apply_mask"})
        if unknown:
            raise PortError(f"Cannot port {where}: its call passes {unknown}, which the port does not write.")
        initial = node.kwargs.get("initial_state")
        ins, outs_shapes = trace.calls[node.layer][node.call]
        base = attrs[node.layer] + (f"_call{node.call}" if node.call else "")
        call = _Call(
            name=node.layer,
            module=module,
            attr=f"self.{attrs[node.layer]}",
            key=attrs[node.layer],
            xs=[var[r] for r in node.inputs],
            masks=[mask_var.get(r) for r in node.inputs],
            outs=_output_names(g, module, base, len(outs_shapes)),
            shapes=list(trace.shapes[(node.layer, node.call)]),
            initial_state=[var[r] for r in _refs(initial)] if initial is not None else None,
            apply_mask=bool(node.kwargs.get("apply_mask", True)),
            in_shape=ins[0] if ins else (),
        )
        built = len(g.init)
        out_masks = emitter(g, call)
        if node.call:  # a shared layer: its submodule and weights exist from its first call
            del g.init[built:]
        for k, out in enumerate(call.outs):
            var[(node.layer, node.call, k)] = out
            mask_var[(node.layer, node.call, k)] = out_masks[k] if k < len(out_masks) else None
    returns = [var[r] for r in model.output_refs]
    return g, params, returns, trace


def _wrap(head: str, items: list[str], close: str, indent: str, hug: bool = True) -> list[str]:
    """``head`` + items + ``close`` as ruff formats it: one line, else the items on one indented line,
    else one item per line with a trailing comma. ``head`` ends with the opening bracket."""
    flat = f"{indent}{head}{', '.join(items)}{close}"
    if len(flat) <= LINE:
        return [flat]
    inner = f"{indent}    {', '.join(items)}"
    if hug and len(inner) <= LINE:
        return [f"{indent}{head}", inner, f"{indent}{close}"]
    return [f"{indent}{head}", *(f"{indent}    {item}," for item in items), f"{indent}{close}"]


def port_source(model: KerasModel, source: str | None = None) -> tuple[str, dict[str, torch.Tensor]]:
    """The text of ``model.py`` and the state dict for ``model.safetensors``, without writing files.

    Args:
        model: a converted model (``tlp.load_keras``).
        source: the file name quoted in the generated docstring.

    Raises:
        PortError: some layer or option has no plain-PyTorch writer (the message names it).
    """
    g, params, returns, _ = _build(model)
    class_name = _camel(model.name)
    if class_name in g.names or class_name in _HELPERS:
        class_name += "Model"
    # Drop mask definitions nothing reads (a mask that only reaches layers which ignore it).
    body: list[str] = []
    for k, (code, defined) in enumerate(g.body):
        later = "\n".join(line for lines, _ in g.body[k + 1 :] for line in lines) + " " + " ".join(returns)
        if defined is None or re.search(rf"\b{re.escape(defined)}\b", later):
            body += code
    if len(returns) == 1:
        ret_type, ret_lines = "torch.Tensor", [f"{_INDENT}return {returns[0]}"]
    else:
        ret_type, ret_lines = "list[torch.Tensor]", _wrap("return [", returns, "]", _INDENT)
    signature = _wrap(
        "def forward(", ["self", *(f"{p}: torch.Tensor" for p in params)], f") -> {ret_type}:", "    ", False
    )
    text = "\n".join(body)
    rnn_utils = "masked_rnn" in g.helpers
    helpers = [_HELPERS[name].strip("\n") for name in _HELPERS if name in g.helpers]
    uses_f = bool(re.search(r"\bF\.", text + "\n".join(helpers)))
    origin = f", ported from {source}" if source else ""
    lines = [
        f'"""The Keras model {model.name!r} in plain PyTorch{origin}.',
        "",
        "Needs only torch and safetensors. Inputs and outputs are in Keras order and layout",
        "(batch first, channels last); N is the batch size and L the number of time steps in",
        "the shape comments.",
        "",
        "    from model import load",
        "",
        "    model = load()  # the weights in model.safetensors beside this file",
        "    y = model(x)",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from pathlib import Path",
        "",
        "import torch",
    ]
    if uses_f:
        lines.append("import torch.nn.functional as F")
    lines += ["from safetensors.torch import load_file", "from torch import nn"]
    if rnn_utils:
        lines.append("from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence")
    lines += ["", f'__all__ = ["{class_name}", "load"]', ""]
    for helper in helpers:
        lines += ["", helper, ""]
    lines += [
        "",
        f"class {class_name}(nn.Module):",
        f'    """Keras model {model.name!r}: one attribute per Keras layer with weights."""',
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *(f"        {line}" for line in g.init),
        "",
        *signature,
        *(f"{_INDENT}{line}" for line in body),
        *ret_lines,
        "",
        "",
        f"def load(path: str | Path | None = None) -> {class_name}:",
        '    """Builds the model and loads its weights (default: model.safetensors beside this file)."""',
        f"    model = {class_name}()",
        '    weights = Path(__file__).with_name("model.safetensors") if path is None else path',
        "    model.load_state_dict(load_file(weights))",
        "    return model.eval()",
        "",
    ]
    return "\n".join(lines), g.state


def port(model_or_path: KerasModel | str | Path, outdir: str | Path, check: bool = True) -> Path:
    """Writes ``outdir/model.py`` (plain PyTorch) and ``outdir/model.safetensors`` for a Keras model.

    Args:
        model_or_path: a converted model, or a Keras file (``.keras``, ``.h5``) to convert first.
        outdir: the output folder (created if missing); existing ``model.py``/``model.safetensors``
            in it are replaced.
        check: run the generated module once on random inputs and compare it with the converted
            model (atol 1e-5); a mismatch raises instead of leaving wrong code behind.

    Returns:
        The path of the written ``model.py``.

    Raises:
        PortError: some layer or option cannot be written as plain PyTorch (the message names the
            layer, its class and the option), or the check failed.

    Example:
        >>> tlp.port("model.keras", "ported/")
        >>> # then, anywhere with torch and safetensors: from model import load; net = load()
    """
    from safetensors.torch import save_file

    source_name = None
    if isinstance(model_or_path, KerasModel):
        model = model_or_path
    elif isinstance(model_or_path, (str, Path)):
        from .api import load_keras

        source_name = Path(model_or_path).name
        model = load_keras(model_or_path)
    else:
        raise PortError(
            f"port takes a converted model (tlp.load_keras) or a Keras file path. Received {type(model_or_path).__name__}."
        )
    model.eval()
    source, state = port_source(model, source_name)
    if check:
        _check(model, source, state)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.py").write_text(source, encoding="utf-8")
    save_file(state, str(out / "model.safetensors"))
    return out / "model.py"


def _check(model: KerasModel, source: str, state: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    """Runs the generated source on the trace inputs and compares it with ``model``."""
    namespace: dict[str, Any] = {"__name__": "_ported_model"}
    exec(compile(source, "<ported model.py>", "exec"), namespace)  # noqa: S102 (our own generated code)
    ported = namespace[namespace["__all__"][0]]()
    ported.load_state_dict(state)
    ported.eval()
    for run in range(2):
        xs = _trace_inputs(model, run)
        with torch.no_grad():
            want = model(*xs)
            got = ported(*xs)
        want_list = want if isinstance(want, list) else [want]
        got_list = got if isinstance(got, list) else [got]
        errors = [float((a - b).abs().max()) if a.numel() else 0.0 for a, b in zip(want_list, got_list)]
        if len(got_list) != len(want_list) or any(not e <= atol for e in errors):
            raise PortError(
                f"Cannot port model {model.name!r}: the generated module disagrees with the converted model "
                f"(max errors {errors}, atol {atol}). This is a bug in torch_lstm_probe.port; please report it "
                "with the model. Meanwhile use tlp.load_keras."
            )
