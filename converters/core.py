"""Converters for core Keras layers: Dense, Embedding, Dropout, Activation, TimeDistributed.

======================  ===============  ===================================
Keras array             shape            PyTorch parameter
======================  ===============  ===================================
Dense ``kernel``        ``(in, out)``    ``weight = kernel.T`` ``(out, in)``
Dense ``bias``          ``(out,)``       ``bias``
Embedding ``embeddings``  ``(V, D)``     ``weight`` (row 0 stays a learned row)
======================  ===============  ===================================
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Mapping

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.core import (
    ActivationConfig,
    DenseConfig,
    DropoutConfig,
    EmbeddingConfig,
    MaskingConfig,
    TimeDistributedConfig,
)

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    config_int,
    inner_layer_spec,
    layer_label,
    refuse_unless,
    resolve_activation,
    to_tensor,
    unpack_weights,
)
from .registry import lookup, register
from .spec import LayerSpec

__all__ = [
    "convert_dense",
    "convert_embedding",
    "convert_reversible_embedding",
    "convert_dropout",
    "convert_activation",
    "convert_time_distributed",
    "convert_masking",
]

_KERAS1_DENSE = {
    "output_dim",
    "init",
    "W_regularizer",
    "b_regularizer",
    "W_constraint",
    "b_constraint",
    "bias",
    "input_dim",
}


def _refuse_quantized(layer: LayerSpec, ctx: Context) -> None:
    refuse_unless(
        layer,
        ctx,
        "lora_rank",
        [None, 0],
        "LoRA-adapted weights are not merged by this converter. "
        "Fix: merge the LoRA factors into the kernel in Keras before saving.",
    )
    refuse_unless(
        layer, ctx, "quantization_config", [None], "Quantized layers are not supported. Fix: save the float model."
    )
    refuse_unless(
        layer, ctx, "quantization_mode", [None], "Quantized layers are not supported. Fix: save the float model."
    )


@register("Dense")
def convert_dense(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Dense`` → :class:`torch_lstm_probe.layers.Dense` (weight = kernel.T)."""
    cfg = layer.config
    check_keys(
        layer,
        ctx,
        {"units", "activation", "use_bias", "lora_rank", "lora_alpha", "quantization_config", "quantization_mode"},
        INIT_REG_CONSTRAINT("kernel", "bias") | _KERAS1_DENSE,
    )
    _refuse_quantized(layer, ctx)
    units = config_int(layer, ctx, "units" if "units" in cfg else "output_dim")
    use_bias = bool(cfg.get("use_bias", cfg.get("bias", True)))
    features = int(layer.weights[0].shape[0]) if layer.weights and layer.weights[0].ndim == 2 else 0
    expected = {"kernel": (features, units)}
    if use_bias:
        expected["bias"] = (units,)
    w = unpack_weights(layer, ctx, expected)
    config = DenseConfig(features, units, use_bias, resolve_activation(layer, ctx, "activation"))
    state = {"weight": to_tensor(w["kernel"].T)}  # (out, in)
    if use_bias:
        state["bias"] = to_tensor(w["bias"])
    return ModuleSpec("Dense", config, state)


@register("Embedding")
def convert_embedding(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Embedding`` → :class:`torch_lstm_probe.layers.Embedding` (weight = embeddings)."""
    cfg = layer.config
    check_keys(
        layer,
        ctx,
        {"input_dim", "output_dim", "mask_zero", "lora_rank", "lora_alpha", "quantization_config", "quantization_mode"},
        INIT_REG_CONSTRAINT("embeddings")
        | {"input_length", "sparse", "dropout", "init", "W_regularizer", "W_constraint"},
    )
    _refuse_quantized(layer, ctx)
    vocab, dim = config_int(layer, ctx, "input_dim"), config_int(layer, ctx, "output_dim")
    w = unpack_weights(layer, ctx, {"embeddings": (vocab, dim)})
    # Keras 3 looks rows up with ops.take, which reads a negative index -k as row V-k; Keras 2 refuses it.
    config = EmbeddingConfig(vocab, dim, bool(cfg.get("mask_zero", False)), wrap_negative=ctx.keras_version.major >= 3)
    return ModuleSpec("Embedding", config, {"weight": to_tensor(w["embeddings"])})


@register("ReversibleEmbedding")
def convert_reversible_embedding(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``ReversibleEmbedding`` called forward (``reverse=False``) → the Embedding
    :func:`convert_embedding` builds: ``y[..., :] = embeddings[x]``.

    With ``tie_weights=False`` the file also holds ``reverse_embeddings`` ``(output_dim, input_dim)``,
    used only by the reverse projection. A call recorded with ``reverse=True``
    (``logits = x @ embeddings.T``) is refused.
    """
    for call in layer.calls:
        if call.kwargs.get("reverse", False) is not False:
            raise UnsupportedOptionError(
                f"{layer_label(layer, ctx)}: a call passes reverse={call.kwargs.get('reverse')!r}. Expected "
                "reverse=False: the reverse projection onto the vocabulary is not converted. Fix: call the layer "
                "forward only, or project with a Dense layer sharing the transposed embeddings."
            )
    tied = layer.config.get("tie_weights", True)
    if tied not in (True, False):
        raise UnsupportedOptionError(f"{layer_label(layer, ctx)}: tie_weights is {tied!r}. Expected true or false.")
    keys = {"tie_weights", "reverse_dtype", "logit_soft_cap"}
    plain = {k: v for k, v in layer.config.items() if k not in keys}
    weights = layer.weights
    if not tied:
        vocab, dim = config_int(layer, ctx, "input_dim"), config_int(layer, ctx, "output_dim")
        unpack_weights(layer, ctx, {"embeddings": (vocab, dim), "reverse_embeddings": (dim, vocab)})
        weights = weights[:1]
    return convert_embedding(replace(layer, config=plain, weights=weights), ctx)


@register("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout")
def convert_dropout(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Dropout and noise layers are the identity at inference."""
    check_keys(layer, ctx, {"rate", "p", "stddev"}, {"noise_shape", "seed"})
    unpack_weights(layer, ctx, {})
    rate = float(layer.config.get("rate", layer.config.get("p", layer.config.get("stddev", 0.0))))
    return ModuleSpec("Dropout", DropoutConfig(rate))


# Layers that are the identity at inference (Keras runs them with training=False): Keras' own
# Identity and the random data-augmentation layers. RandomCrop is not among them (tf_keras crops
# at inference), nor AutoContrast (it stretches at inference); Equalization and Solarization are
# the identity at inference too and are converted with the image layers.
INFERENCE_IDENTITY = (
    "Identity",
    "RandomFlip",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
    "RandomContrast",
    "RandomBrightness",
    "RandomHeight",
    "RandomWidth",
    "RandomHue",
    "RandomSaturation",
    "RandomColorJitter",
    "RandomColorDegeneration",
    "RandomGrayscale",
    "RandomSharpness",
    "RandomShear",
    "RandomPosterization",
    "RandomInvert",
    "RandomErasing",
    "RandomGaussianBlur",
    "RandomPerspective",
    "RandomElasticTransform",
    "AugMix",
    "CutMix",
    "MixUp",
    "RandAugment",
)


@register(*INFERENCE_IDENTITY)
def convert_inference_identity(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """A layer that returns its input unchanged at inference → :class:`torch_lstm_probe.layers.Dropout`
    (the identity); its options only shape training-time randomness. ``Identity`` passes a mask on;
    the augmentation layers do not support masking, so a mask stops there, as in Keras."""
    unpack_weights(layer, ctx, {})
    return ModuleSpec("Dropout", DropoutConfig(0.0, keeps_mask=layer.class_name == "Identity"))


@register("Activation")
def convert_activation(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Activation`` → :class:`torch_lstm_probe.layers.Activation`."""
    check_keys(layer, ctx, {"activation"}, set())
    unpack_weights(layer, ctx, {})
    return ModuleSpec("Activation", ActivationConfig(resolve_activation(layer, ctx, "activation")))


@register("TimeDistributed")
def convert_time_distributed(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``TimeDistributed(layer)`` → :class:`torch_lstm_probe.layers.TimeDistributed`.

    The wrapped layer owns all the weights; its state_dict keys gain the prefix ``layer.``.
    A wrapped Sequential or Functional model (``layer.model``, parsed by the reader) becomes a
    nested model, and a wrapped class that ``custom_layers`` names becomes the user's module:
    both come from ``ctx.build_inner``.
    """
    check_keys(layer, ctx, {"layer"}, set())
    inner_raw: Any = layer.config.get("layer")
    if not isinstance(inner_raw, Mapping) or not isinstance(inner_raw.get("config", {}), Mapping):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'layer' is not a serialized layer. Received: {inner_raw!r}. "
            "Expected {'class_name': ..., 'config': {...}}."
        )
    inner = inner_layer_spec(layer, inner_raw, "layer", layer.weights, model=layer.model)
    built = ctx.build_inner(inner) if ctx.build_inner is not None else None
    if built is not None:
        # The prebuilt module defines the saved config (TimeDistributed.get_config reads it).
        placeholder = TimeDistributedConfig(layer={"type": None, "config": None})
        return ModuleSpec("TimeDistributed", placeholder, children={"layer": built})
    converted = lookup(inner, ctx)(inner, ctx)
    config = TimeDistributedConfig(layer={"type": converted.type, "config": asdict(converted.config)})
    state = {f"layer.{k}": v for k, v in converted.state_dict.items()}
    return ModuleSpec("TimeDistributed", config, state)


@register("Masking")
def convert_masking(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Masking`` → :class:`torch_lstm_probe.layers.Masking`."""
    check_keys(layer, ctx, {"mask_value"}, set())
    unpack_weights(layer, ctx, {})
    return ModuleSpec("Masking", MaskingConfig(float(layer.config.get("mask_value", 0.0))))
