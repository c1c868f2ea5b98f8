"""The semantic decisions a conversion took for one layer, in words, for the ``verify`` table.

Every decision described here is taken elsewhere in this package (activations in
:func:`~.common.resolve_activation`, weight layouts in the family converters and :mod:`.legacy`,
call rules in :mod:`.build` and :func:`~.recurrent.initial_state_rule`); this module only reads
their results back from the runtime module's config, the graph node's call keywords and, when
the file was read, the layer's spec. It decides nothing and runs nothing.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .legacy import is_keras1_config
from .spec import KerasVersion, LayerSpec, parse_version

__all__ = ["describe_decisions", "writer_name"]

# Runtime activation names whose formula depends on the Keras generation that wrote the file.
_GENERATION_ACTIVATIONS = {
    "keras3_hard_sigmoid": "hard_sigmoid as Keras 3: relu6(x + 3) / 6 = clip(x/6 + 0.5, 0, 1)",
    "keras2_hard_sigmoid": "hard_sigmoid as Keras 1/2: clip(0.2x + 0.5, 0, 1)",
    "keras3_hard_silu": "hard_silu as Keras 3: x * relu6(x + 3) / 6",
    "keras3_leaky_relu": "leaky_relu as Keras 3: negative_slope 0.2",
    "gelu_erf": "gelu, exact erf form (Keras' default approximate=False)",
}
_RECURRENT_TYPES = ("LSTM", "GRU", "SimpleRNN")
_CUDNN_BIAS_GATES = {"LSTM": 8, "GRU": 6}  # bias length / units of CuDNNLSTM / CuDNNGRU weights
_SIGMOID_DEFAULT_FROM = KerasVersion(2, 3, 0)  # Keras 2 before 2.3 defaulted recurrent_activation to hard_sigmoid


def writer_name(keras_version: KerasVersion | str, library: str) -> str:
    """The Keras generation that wrote a file, in words: ``"Keras 3.15.1"``, ``"tf_keras 2.21.0"``."""
    version = parse_version(keras_version) if isinstance(keras_version, str) else keras_version
    if version.major >= 3:
        return f"Keras {version}"
    if library == "tf_keras":
        return f"tf_keras {version}"
    return f"Keras {version}"


def describe_decisions(
    module_type: str | None,
    config: Mapping[str, Any] | None,
    keras_version: KerasVersion | str,
    library: str = "keras",
    calls: Sequence[Mapping[str, Any]] = (),
    layer: LayerSpec | None = None,
    masked: bool | None = None,
) -> list[str]:
    """The decisions that make one converted layer compute what Keras computes, one line each.

    Args:
        module_type: the runtime module's registered type (``"LSTM"``, ``"Bidirectional"``, ...),
            ``None`` for a user's custom module.
        config: that module's config (``module.get_config()``), ``None`` when it has none.
        keras_version: the ``keras_version`` of the file (``model.source_info["keras_version"]``).
        library: ``"keras"`` or ``"tf_keras"`` (``model.source_info["library"]``).
        calls: the graph node's keyword inputs for each call of the layer (``initial_state``
            references, ``apply_mask``, an explicit ``mask``), as ``KerasModel.get_config()`` holds them.
        layer: the layer's spec as read from the file, when known: it tells what the file stored
            (a CuDNN weight layout, a Keras 1 config, a missing key filled by a default).
        masked: whether a Keras mask reached the layer in the run being verified (``None``: unknown).

    Returns:
        Short sentences, most important first; empty for a layer with nothing to decide.

    Example:
        >>> describe_decisions("LSTM", model.layer("lstm").get_config(), "2.21.0", "tf_keras")
        ['recurrent_activation: hard_sigmoid as Keras 1/2: clip(0.2x + 0.5, 0, 1) (tf_keras 2.21.0 wrote the file)', ...]
    """
    version = parse_version(keras_version) if isinstance(keras_version, str) else keras_version
    writer = writer_name(version, library)
    cfg: Mapping[str, Any] = config or {}
    if module_type is None:
        return ["custom module from custom_layers: its semantics are the user's converter's"]
    lines = _activation_lines(cfg, writer)
    if module_type in _RECURRENT_TYPES:
        lines += _recurrent_lines(module_type, cfg, version, calls, layer, masked)
    elif module_type == "Bidirectional":
        lines += _bidirectional_lines(cfg, version, library, calls, layer, masked)
    elif module_type == "TimeDistributed":
        inner = _entry(cfg, "layer")
        for line in describe_decisions(inner.get("type"), inner.get("config"), version, library):
            lines.append(f"inner layer: {line}")
    elif module_type == "Embedding":
        if cfg.get("mask_zero"):
            lines.append("mask_zero: token id 0 gives a False mask (row 0 is still read)")
        if cfg.get("wrap_negative"):
            lines.append(f"negative ids: -k reads row input_dim - k, as Keras 3 (ops.take); {writer} wrote the file")
        else:
            lines.append(f"negative ids: refused, as Keras 1/2 refuse them; {writer} wrote the file")
    elif module_type == "Masking":
        lines.append(f"mask: a step whose features all equal {cfg.get('mask_value', 0.0)!r} is masked and zeroed")
    elif module_type in ("Attention", "AdditiveAttention", "MultiHeadAttention", "GroupQueryAttention"):
        lines += _attention_lines(module_type, cfg, writer)
    elif "mask_rules" in cfg:
        lines.append(_mask_rules_line(module_type, str(cfg["mask_rules"]), writer))
    if layer is not None and layer.class_name != module_type and layer.model is None:
        lines.append(f"Keras class {layer.class_name} runs as the runtime module {module_type}")
    return lines


def _attention_lines(module_type: str, cfg: Mapping[str, Any], writer: str) -> list[str]:
    """How an attention layer masks, by the file's writer."""
    lines = []
    if module_type in ("Attention", "AdditiveAttention"):
        lines.append("masked value steps: score - 1e9 before the softmax (a fully masked row is uniform)")
        how = "selected to 0 (Keras 3)" if cfg.get("zero_masked") == "where" else "multiplied by the mask (Keras 2)"
        lines.append(f"masked query steps: output {how}; {writer} wrote the file")
    elif cfg.get("mask_rule") == "subtract":
        lines.append(f"masked scores: score - 1e9 (a masked query row is uniform), as tf_keras' Softmax; {writer}")
    else:
        lines.append(
            "masked scores: a call returning scores zeroes masked query rows (Keras 3 Softmax), any other call "
            f"leaves them uniform (its dot_product_attention); {writer} wrote the file"
        )
    if cfg.get("clears_input_masks"):
        lines.append("Keras 3: the masks of the tensors it reads are deleted for the layers run after it")
    return lines


def _entry(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A wrapper's ``{"type", "config"}`` entry of an inner module (empty when absent)."""
    value = cfg.get(key)
    return value if isinstance(value, Mapping) else {}


def _activation_lines(cfg: Mapping[str, Any], writer: str) -> list[str]:
    lines = []
    for key in ("activation", "recurrent_activation"):
        name = cfg.get(key)
        if isinstance(name, str) and name in _GENERATION_ACTIVATIONS:
            lines.append(f"{key}: {_GENERATION_ACTIVATIONS[name]} ({writer} wrote the file)")
    return lines


def _mask_rules_line(module_type: str, rules: str, writer: str) -> str:
    if module_type == "Softmax":
        how = {"keras3": "masked entries set to -3e4 before softmax", "keras2": "float16 min added at masked entries"}
        return f"mask_rules={rules}: {how.get(rules, 'masked entries hidden as ' + rules)} ({writer} wrote the file)"
    how = {
        "keras2": "output mask = AND of the inputs' masks; values ignore masks",
        "keras3": "output mask = OR of the masks when every input has one",
    }
    return f"mask_rules={rules}: {how.get(rules, rules)} ({writer} wrote the file)"


def _stored_bias_size(layer: LayerSpec | None) -> int | None:
    """The length of the bias array the file stored for a recurrent layer (its third array)."""
    if layer is None or len(layer.weights) != 3 or layer.weights[2].ndim != 1:
        return None
    return int(layer.weights[2].shape[0])


def _recurrent_lines(
    module_type: str,
    cfg: Mapping[str, Any],
    version: KerasVersion,
    calls: Sequence[Mapping[str, Any]],
    layer: LayerSpec | None,
    masked: bool | None,
) -> list[str]:
    lines: list[str] = []
    units = cfg.get("hidden_size")
    use_bias = bool(cfg.get("use_bias", True))
    stored_class = layer.class_name if layer is not None else module_type
    keras1 = layer is not None and (version.major < 2 or is_keras1_config(layer.config))
    if keras1:
        lines.append(
            "Keras 1 layer upgraded: output_dim -> units, inner_activation -> recurrent_activation"
            + ("; per-gate W/U/b arrays packed into kernel, recurrent_kernel, bias" if len(layer.weights) > 3 else "")  # type: ignore[union-attr]
        )
    elif (
        layer is not None
        and module_type in ("LSTM", "GRU")
        and stored_class == module_type
        and "recurrent_activation" not in layer.config
        and version < _SIGMOID_DEFAULT_FROM
    ):
        lines.append("recurrent_activation not in the config: hard_sigmoid, the default before Keras 2.3")
    bias_size = _stored_bias_size(layer)
    cudnn = stored_class.startswith("CuDNN") or (
        isinstance(units, int) and bias_size == _CUDNN_BIAS_GATES.get(module_type, 0) * units
    )
    if module_type == "LSTM":
        if cudnn:
            lines.append(
                "CuDNN layout: each gate's kernel block read as cuDNN's row-major (units, features) matrix and "
                "transposed; bias (8u,) = input half + recurrent half, summed into bias_ih_l0, bias_hh_l0 = 0"
            )
        elif use_bias:
            lines.append("bias split: Keras' one bias (4u,) -> bias_ih_l0, bias_hh_l0 = 0; gates i f c o = i f g o")
        else:
            lines.append("use_bias=False: no bias parameters")
    elif module_type == "GRU":
        if cudnn:
            lines.append(
                "CuDNN layout: each gate's kernel block read as cuDNN's row-major (units, features) matrix and "
                "transposed; bias (6u,) -> (2, 3u): input row, recurrent row"
            )
        if cfg.get("reset_after"):
            bias = (
                "bias (2, 3u) -> bias_ih_l0 = row 0 (input), bias_hh_l0 = row 1 (recurrent)" if use_bias else "no bias"
            )
            lines.append(f"reset_after=True: nn.GRU's formula; {bias}; gates z r h -> r z n")
        else:
            bias = "bias (3u,) -> bias_ih_l0, bias_hh_l0 = 0" if use_bias else "no bias"
            lines.append(
                f"reset_after=False: own cell, h~ = act(x W_h + b_h + (r*h) U_h); {bias}; gates z r h -> r z n"
            )
        if layer is not None and "reset_after" not in layer.config and not keras1 and not cudnn:
            lines.append("reset_after not in the config: read from the bias shape")
    elif use_bias:
        lines.append("bias: Keras' bias (u,) -> bias_ih_l0, bias_hh_l0 = 0")
    zero = bool(cfg.get("zero_output_for_mask", False))
    rule = "masked steps skipped, state carried, output " + ("zeros" if zero else "the previous output")
    unmasked_calls = [c for c in calls if c.get("apply_mask") is False]
    if masked is True:
        lines.append(f"mask applied: {rule}")
    elif masked is None and not unmasked_calls:
        lines.append(f"mask rule, if a mask arrives: {rule}")
    if unmasked_calls:
        lines.append(
            "apply_mask=False: Keras 3 passes the automatic mask only to a call with one tensor argument; this "
            "call also passes initial_state, so it runs unmasked"
        )
    with_state = [c for c in calls if c.get("initial_state")]
    for call in with_state:
        refs = ", ".join(_ref_text(r) for r in call["initial_state"])
        lines.append(f"initial_state from {refs}")
        if version.major < 3 and "mask" not in call:
            lines.append("Keras 1/2 pass the input mask to a call with initial_state too")
    if cfg.get("stateful") or with_state:
        if cfg.get("initial_state_rule") == "carried_unless_zero":
            text = "a stateful call uses its carried state while any of it is non-zero, the given one after a reset"
            who = "tf.keras/tf_keras"
        else:
            text = "a stateful call always starts from the given initial_state"
            who = "Keras 3 and standalone Keras 2"
        matters = "" if cfg.get("stateful") else " (matters only for stateful layers)"
        lines.append(f"initial_state_rule={cfg.get('initial_state_rule')}: {text}, as {who}{matters}")
    if cfg.get("stateful"):
        lines.append(f"stateful: batch {cfg.get('batch_size')}, state carried across calls until reset_states()")
    if cfg.get("go_backwards"):
        lines.append("go_backwards: sequence output in processing order (reversed time), as Keras returns it")
    if cfg.get("time_major"):
        lines.append("time_major: input and sequence output are (time, batch, ...)")
    return lines


def _ref_text(ref: Any) -> str:
    if isinstance(ref, (list, tuple)) and len(ref) == 3:
        name, call, index = ref
        return f"{name}" + (f"@{call}" if call else "") + f":{index}"
    return repr(ref)


def _bidirectional_lines(
    cfg: Mapping[str, Any],
    version: KerasVersion,
    library: str,
    calls: Sequence[Mapping[str, Any]],
    layer: LayerSpec | None,
    masked: bool | None,
) -> list[str]:
    lines = [
        f"merge_mode={cfg.get('merge_mode')!r}: backward sequence flipped to input order before merging; "
        "zero_output_for_mask forced to return_sequences on both halves, as Keras"
    ]
    halves = {}
    for role in ("forward_layer", "backward_layer"):
        entry = _entry(cfg, role)
        inner = _inner_spec(layer, role)
        halves[role] = describe_decisions(
            entry.get("type"), entry.get("config"), version, library, calls, inner, masked
        )
    forward, backward = halves["forward_layer"], halves["backward_layer"]
    shared = [line for line in forward if line in backward]
    lines += [f"both halves: {line}" for line in shared]
    lines += [f"forward: {line}" for line in forward if line not in shared]
    lines += [f"backward: {line}" for line in backward if line not in shared]
    return lines


def _inner_spec(layer: LayerSpec | None, role: str) -> LayerSpec | None:
    """A Bidirectional half as a LayerSpec (config and its half of the weights), for what the file stored."""
    if layer is None:
        return None
    raw = layer.config.get("backward_layer" if role == "backward_layer" else "layer")
    if not isinstance(raw, Mapping):
        raw = layer.config.get("layer")
    if not isinstance(raw, Mapping) or not isinstance(raw.get("config"), Mapping):
        return None
    half = len(layer.weights) // 2
    weights = layer.weights[:half] if role == "forward_layer" else layer.weights[half:]
    return LayerSpec(name=layer.name, class_name=str(raw.get("class_name")), config=raw["config"], weights=weights)
