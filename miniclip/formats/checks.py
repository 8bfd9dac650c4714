"""Checks every weights file passes before a model is built from it.

A small file must not build a huge model, a structure miniclip does not
compute must not load approximately, and a NaN in a weight must not become
a `nan%` accuracy: each of these is refused here with a CheckpointError
naming the file and the key.
"""
import numpy as np

from miniclip.model import CLIP, OPENAI_EXTRA_KEYS, config_from_state_dict, with_loss_of_weights


class CheckpointError(ValueError):
    """A checkpoint file that cannot (or must not) be read."""

# Keys (substrings) of structures miniclip does not compute -> what they are.
_UNSUPPORTED = (
    ("text_decoder.", "a text decoder (CoCa)"),
    ("visual.attn_pool.", "an attention pooler in the image tower (CoCa / attentional_pool)"),
    ("attn_pool.", "an attention pooler"),
    (".ls_1.", "layer scale (ls_init_value)"), (".ls_2.", "layer scale (ls_init_value)"),
    (".ln_attn.", "a LayerNorm inside attention (scale_attn)"), (".mlp.ln.", "a LayerNorm inside the MLP (scale_fc)"),
    (".q_norm.", "query/key normalisation (qk_norm)"), (".k_norm.", "query/key normalisation (qk_norm)"),
    ("visual.trunk.", "a timm image tower"), ("text.transformer.", "a Hugging Face text tower (OpenCLIP hf_model_name)"),
    ("visual.conv1.bias", "a bias on the patch embedding"),
    ("text_projection.weight", "a Linear text projection (OpenCLIP proj_type 'linear')"),
    ("visual.head.", "an MLP projection head"), ("visual.norm.", "a norm at the end of the image tower (not ln_post)"),
)
_SUPPORTED = ("miniclip computes OpenAI's CLIP structure only: pre-LayerNorm ViT (class-token pooling) or "
              "OpenAI's ModifiedResNet image tower, end-of-text text pooling, OpenAI's parameters (QuickGELU or exact GELU)")


def check_supported(state, path=None):
    """Refuse a state dict with a structure miniclip would compute approximately or not at all.

    path: the file the state came from, named in the error."""
    where = f"{path}: " if path is not None else ""
    for key in state:
        for marker, what in _UNSUPPORTED:
            if marker in key:
                raise CheckpointError(f"{where}{key!r}: this checkpoint has {what}, which miniclip does not "
                                      f"compute; {_SUPPORTED}. It is refused rather than loaded approximately")
    resnet = any(key.startswith("visual.layer1.") for key in state)      # OpenAI's ModifiedResNet has no ln_pre
    if "visual.conv1.weight" in state and not resnet and "visual.ln_pre.weight" not in state:
        raise CheckpointError(f"{where}the image tower has no ln_pre (OpenCLIP no_ln_pre): a different norm "
                              f"placement; {_SUPPORTED}")



def check_finite(state, path):
    """Refuse a weight holding NaN or ±Inf, naming the tensor (such a model scores `nan%`).

    state: {name: array}; integer and boolean arrays cannot hold either and are skipped."""
    for name, value in state.items():
        array = np.asarray(value)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise CheckpointError(f"{path}: weight {name!r} holds {bad} NaN or infinite value(s) of "
                                  f"{array.size}: the training that wrote it diverged or the file is "
                                  f"damaged; use an earlier checkpoint")


# --------------------------------------------------------------------------
# Sizes before a model is built (a small file must not build a huge model)
# --------------------------------------------------------------------------

def config_parameter_count(config):
    """How many numbers CLIP(config) holds, computed from the config alone (nothing built).

    A transformer block of width W and MLP width H: ln_1, ln_2 (2W each), in_proj
    (3W² + 3W), out_proj (W² + W), c_fc (HW + H), c_proj (HW + W) -> 4W² + 2HW + 9W + H.
    A ResNet tower counts its BatchNorm buffers too (they are in the state dict).
    """
    def blocks(layers, w, h):
        return layers * (4 * w * w + 2 * h * w + 9 * w + h)
    c = config
    vw, tw, e = c.vision_width, c.transformer_width, c.embed_dim
    if c.is_resnet:
        vision = resnet_parameter_count(c.vision_layers, vw, c.image_resolution, e)
    else:
        grid = c.image_resolution // c.vision_patch_size
        vision = (vw * 3 * c.vision_patch_size ** 2 + vw + (grid * grid + 1) * vw   # conv1, class, positions
                  + 2 * vw + blocks(c.vision_layers, vw, c.vision_mlp) + 2 * vw + vw * e)   # ln_pre, blocks, ln_post, proj
    text = (blocks(c.transformer_layers, tw, c.transformer_mlp) + c.vocab_size * tw + c.context_length * tw
            + 2 * tw + tw * e + 1)                                               # ..., ln_final, projection, logit_scale
    return vision + text + (1 if c.has_logit_bias else 0)                                # SigLIP's logit_bias


def resnet_parameter_count(layers, width, resolution, output_dim):
    """Numbers (parameters and BatchNorm buffers) of OpenAI's ModifiedResNet, from its shape alone."""
    def bn(c):                                        # weight, bias, running mean and var, num_batches_tracked
        return 4 * c + 1
    h = width // 2
    total = 3 * h * 9 + bn(h) + h * h * 9 + bn(h) + h * width * 9 + bn(width)      # the 3-conv stem
    inplanes = width
    for stage, blocks in enumerate(layers):
        planes = width * 2 ** stage
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            total += inplanes * planes + bn(planes) + planes * planes * 9 + bn(planes)   # conv1, conv2
            total += planes * 4 * planes + bn(4 * planes)                                 # conv3
            if stride > 1 or inplanes != 4 * planes:
                total += inplanes * 4 * planes + bn(4 * planes)                           # downsample
            inplanes = 4 * planes
    C = width * 32                                    # the attention pool
    grid = resolution // 32
    total += (grid * grid + 1) * C + 3 * (C * C + C) + C * output_dim + output_dim
    return total



def inferred_config(state, path):
    """The CLIPConfig OpenAI's build_model reads off these weights' shapes; a weight it
    needs that is missing is a CheckpointError naming the file and the key."""
    try:
        return config_from_state_dict(state)
    except KeyError as e:
        raise CheckpointError(f"{path}: {e.args[0]}") from None


def check_config_fits_state(config, shapes, path):
    """Refuse, before building, a config whose model would not be exactly the weights present.

    config: a CLIPConfig; shapes: {name: array or shape tuple} (OpenAI names; a
    shape is enough, so a checkpoint's declared sizes can be checked before its
    arrays are read). The config's fields must be positive ints and its
    parameter count equal the numbers present, so the model built is never
    larger than what the file holds. When the counts differ by little, the
    keys the model lacks or the file lacks are named. Weights with a logit_bias are
    checked against the config's SigLIP form (model.with_loss_of_weights).
    """
    config = with_loss_of_weights(config, shapes)
    fields = {k: v for k, v in vars(config).items() if v is not None
              and k not in ("activation", "layer_norm_eps", "eos_token_id", "loss", "init_logit_scale",
                            "init_logit_bias")}
    bad = {k: v for k, v in fields.items()
           if not (type(v) is int and v > 0 or k == "vision_layers" and isinstance(v, tuple))}
    if bad:
        raise CheckpointError(f"{path}: its model config has invalid values {bad}: each must be a "
                              f"positive integer; the file is damaged or crafted")
    shapes = {k: v if isinstance(v, tuple) else np.shape(v) for k, v in shapes.items() if k not in OPENAI_EXTRA_KEYS}
    present = sum(int(np.prod(shape)) for shape in shapes.values())
    needed = config_parameter_count(config)
    if needed == present:
        return
    if needed <= 2 * present:            # building costs no more than the file already did
        check_keys(CLIP(config, init=False), shapes, path)
    raise CheckpointError(
        f"{path}: its model config (widths {config.vision_width}/{config.transformer_width}, "
        f"layers {config.vision_layers}/{config.transformer_layers}, vocab {config.vocab_size}) "
        f"needs {needed:,} parameters, but the file holds {present:,}: the shapes do not belong "
        f"together; the file is damaged or crafted. Nothing was built")


def check_keys(model, shapes, path):
    """Refuse weights whose names or shapes differ from the model's, naming the first few keys.

    shapes: {name: shape tuple}; the model's parameters and persistent buffers are compared."""
    expected = {name: tuple(value.shape) for name, value in model.named_parameters()}
    expected.update({name: tuple(value.shape) for name, value in model.named_buffers()})
    problems = [f"missing {name!r} (shape {shape})" for name, shape in expected.items() if name not in shapes]
    problems += [f"unexpected {name!r} (shape {shape})" for name, shape in shapes.items() if name not in expected]
    problems += [f"{name!r} has shape {shape}, the model's is {expected[name]}"
                 for name, shape in shapes.items() if name in expected and tuple(shape) != expected[name]]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{path}: the weights do not fit the model: {'; '.join(problems[:3])}{more}")
