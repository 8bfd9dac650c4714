"""OpenCLIP's model folders: open_clip_config.json -> CLIPConfig and preprocessing.

    config, preprocess = read_open_clip_config("folder/open_clip_config.json")

open_clip_config.json holds {"model_cfg": {...}, "preprocess_cfg": {...}}:
model_cfg is OpenCLIP's model_configs/<name>.json (embed_dim, vision_cfg,
text_cfg, quick_gelu, ...); preprocess_cfg its mean and std. miniclip builds
only what it computes exactly: every key is either one it reads, one that does
not change the numbers at inference, or one whose value must be OpenAI's
structure; anything else is refused, naming the file and the key. OpenCLIP's
architecture names themselves ('ViT-B-32', ...) are in miniclip/config.py.
"""
from miniclip.config import CLIPConfig
from miniclip.formats.checks import CheckpointError
from miniclip.formats.config_json import ConfigJSON

# OpenCLIP model_cfg keys -> the value miniclip computes (any other value is refused);
# keys that do not change the numbers at inference are in _OPENCLIP_INERT.
_OPENCLIP_FIXED = {
    "custom_text": False, "multimodal_cfg": None,
    "vision_cfg.ls_init_value": None, "vision_cfg.attentional_pool": False, "vision_cfg.no_ln_pre": False,
    "vision_cfg.pos_embed_type": "learnable", "vision_cfg.final_ln_after_pool": False,
    "vision_cfg.pool_type": "tok", "vision_cfg.global_average_pool": False, "vision_cfg.timm_model_name": None,
    "vision_cfg.input_patchnorm": False,
    "text_cfg.ls_init_value": None, "text_cfg.hf_model_name": None, "text_cfg.embed_cls": False,
    "text_cfg.pad_id": 0, "text_cfg.no_causal_mask": False, "text_cfg.final_ln_after_pool": False,
    "text_cfg.pool_type": "argmax", "text_cfg.proj_type": "linear", "text_cfg.proj_bias": False,
    "text_cfg.attn_pooler_heads": None,
}
_OPENCLIP_INERT = {"cast_dtype", "init_logit_scale", "init_logit_bias", "output_dict", "vision_cfg.patch_dropout",
                   "vision_cfg.output_tokens", "text_cfg.output_tokens", "text_cfg.tokenizer_kwargs",
                   "text_cfg.hf_tokenizer_name", "vision_cfg.attn_pooler_queries", "vision_cfg.attn_pooler_heads",
                   "vision_cfg.image_mean", "vision_cfg.image_std", "vision_cfg.interpolation",
                   "vision_cfg.resize_mode", "text_cfg.vocab_size", "text_cfg.context_length",
                   "text_cfg.width", "text_cfg.heads", "text_cfg.layers", "text_cfg.mlp_ratio",
                   "vision_cfg.image_size", "vision_cfg.layers", "vision_cfg.width", "vision_cfg.head_width",
                   "vision_cfg.mlp_ratio", "vision_cfg.patch_size", "embed_dim", "quick_gelu",
                   "vision_cfg", "text_cfg", "vision_cfg.norm_kwargs", "text_cfg.norm_kwargs"}




def config_from_open_clip(model_cfg, path="open_clip_config.json"):
    """An OpenCLIP model config (open_clip_config.json's "model_cfg", or
    model_configs/<name>.json; a dict or a ConfigJSON) -> CLIPConfig.

    A number in init_logit_bias (OpenCLIP's SigLIP models) makes a SigLIP config
    (loss "siglip": the model has a logit_bias). Anything miniclip cannot compute
    exactly (CoCa, attention poolers, layer scale, timm or HF towers, other pooling or norm placement,
    ...) and any value of the wrong type or range is a CheckpointError naming
    the file and the key.
    """
    cfg = model_cfg if isinstance(model_cfg, ConfigJSON) else ConfigJSON(path, model_cfg, "model_cfg.")
    vision, text = cfg.section("vision_cfg"), cfg.section("text_cfg")
    flat = dict(cfg.value)
    flat.update({f"vision_cfg.{k}": v for k, v in vision.value.items()})
    flat.update({f"text_cfg.{k}": v for k, v in text.value.items()})
    for key, value in flat.items():
        if key in _OPENCLIP_FIXED:
            if value != _OPENCLIP_FIXED[key] and not (value in (None, False) and _OPENCLIP_FIXED[key] in (None, False)):
                raise CheckpointError(f"{cfg.path}: OpenCLIP config {cfg.where}{key} = {value!r}: miniclip computes "
                                      f"only {_OPENCLIP_FIXED[key]!r} here (OpenAI's CLIP structure), so this "
                                      f"model is refused")
        elif key not in _OPENCLIP_INERT:
            raise CheckpointError(f"{cfg.path}: OpenCLIP config key {cfg.where}{key} = {value!r} is not one "
                                  f"miniclip knows: it may change the model, so the model is refused rather "
                                  f"than computed approximately")
    if isinstance(vision.get("layers", 12), list):
        raise CheckpointError(f"{cfg.path}: OpenCLIP {vision.where}layers = {vision.value['layers']!r}: a ResNet "
                              f"image tower, which miniclip's ViT loader does not build")
    if isinstance(vision.get("image_size", 224), list):
        size = vision.get("image_size")
        if len(size) != 2 or size[0] != size[1]:
            raise vision.bad("image_size", "miniclip takes square images only (one size, or [n, n])")
        size = ConfigJSON(cfg.path, {"image_size": size[0]}, vision.where).integer("image_size", low=1)
    else:
        size = vision.integer("image_size", 224, low=1)
    eps = {vision.section("norm_kwargs").number("eps", 1e-5, positive=True, high=0.5),
           text.section("norm_kwargs").number("eps", 1e-5, positive=True, high=0.5)}
    if len(eps) > 1:
        raise CheckpointError(f"{cfg.path}: OpenCLIP towers with different LayerNorm eps {sorted(eps)}: "
                              f"miniclip uses one")
    width = vision.integer("width", 768, low=1)
    text_width = text.integer("width", 512, low=1)
    head_width = vision.integer("head_width", 64, low=1, high=width)
    if width % head_width:
        raise vision.bad("head_width", f"must divide vision_cfg.width {width} (heads = width // head_width)")
    bias = cfg.number("init_logit_bias", None) if cfg.get("init_logit_bias", None) is not None else None
    vision_mlp_ratio = vision.number("mlp_ratio", 4.0, positive=True, high=64)
    text_mlp_ratio = text.number("mlp_ratio", 4.0, positive=True, high=64)
    try:
        return CLIPConfig(
            embed_dim=cfg.integer("embed_dim", low=1), image_resolution=size,
            vision_layers=vision.integer("layers", 12, low=1), vision_width=width,
            vision_patch_size=vision.integer("patch_size", 16, low=1),
            context_length=text.integer("context_length", 77, low=1),
            vocab_size=text.integer("vocab_size", 49408, low=1),
            transformer_width=text_width, transformer_heads=text.integer("heads", 8, low=1, high=text_width),
            transformer_layers=text.integer("layers", 12, low=1),
            vision_heads=width // head_width,
            activation="quick_gelu" if cfg.boolean("quick_gelu", False) else "gelu",
            vision_mlp_width=max(1, int(width * vision_mlp_ratio)),
            transformer_mlp_width=max(1, int(text_width * text_mlp_ratio)),
            layer_norm_eps=eps.pop(), loss="clip" if bias is None else "siglip", init_logit_bias=bias)
    except ValueError as e:                       # CLIPConfig's own checks (divisibility, ...)
        raise CheckpointError(f"{cfg.path}: its OpenCLIP model_cfg is not a valid CLIP ({e})") from None


def read_open_clip_config(path):
    """open_clip_config.json -> (CLIPConfig, preprocessing {"mean": (3 numbers), "std": (3 positive)}).

    The mean must be finite and the std finite and positive (a NaN mean or a 0 std
    would make every image feature NaN)."""
    meta = ConfigJSON.read(path)
    config = config_from_open_clip(meta.section("model_cfg") if "model_cfg" in meta else meta.get("model_cfg"))
    pre = meta.section("preprocess_cfg")
    preprocess = {}
    if "mean" in pre:
        preprocess["mean"] = pre.numbers("mean", 3)
    if "std" in pre:
        preprocess["std"] = pre.numbers("std", 3, positive=True)
    return config, preprocess
