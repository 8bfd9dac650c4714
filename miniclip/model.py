"""CLIP: an image tower and a text tower that embed into one space.

    model = CLIP(get_config("tiny"))
    logits_per_image, logits_per_text = model(images, ids)   # (N, N) similarities ·e^logit_scale

The names, shapes and math are OpenAI's (`clip/model.py`), so OpenAI's
weights load 1:1 (`CLIP.from_state_dict`). One difference in layout: miniclip
keeps sequences batch first, (N, T, W), where OpenAI transposes to (T, N, W)
for PyTorch's attention; the numbers are the same.

Image tower (VisionTransformer):
    (N, 3, R, R) -> patches (N, G², W) -> [class token; patches] + positions
    -> ln_pre -> transformer -> ln_post(class token) @ proj -> (N, E)
Text tower (in CLIP itself, as OpenAI has it):
    ids (N, C) -> token embedding + positions -> causal transformer
    -> ln_final at each row's end-of-text token (its largest id) @ text_projection -> (N, E)
"""
import dataclasses
import math

import numpy as np

import miniclip.functional as F
from miniclip import backend
from miniclip.autograd.tensor import Tensor, as_array
from miniclip.nn import NO_INIT, Embedding, LayerNorm, Module, Parameter, PatchEmbedding, Transformer
from miniclip.nn.resnet import ModifiedResNet


ACTIVATIONS = ("quick_gelu", "gelu")   # OpenAI's x·σ(1.702x); the exact erf GELU (torch.nn.GELU)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """The arguments of OpenAI's CLIP(...): everything that fixes the shapes, plus
    the few choices the shapes cannot show.

    vision_layers: an int (a ViT of that many blocks) or 4 ints (a ResNet,
    OpenAI's ModifiedResNet with that many Bottlenecks per stage; then
    vision_patch_size is unused and may be None).
    vision_heads: None means OpenAI's rule: vision_width // 64 for a ViT,
    vision_width · 32 // 64 for a ResNet's attention pool; at least 1.
    activation: "quick_gelu" (OpenAI's models) or "gelu" (exact, erf: OpenCLIP's
        plain ViT-B-32 and friends, Hugging Face's hidden_act "gelu").
    vision_mlp_width / transformer_mlp_width: the hidden width of each block's
        MLP; None means 4 × the tower's width.
    (A value equal to its default rule is stored as None, so equal models have equal configs.)
    layer_norm_eps: every LayerNorm's eps.
    eos_token_id: where the text tower pools. None: at each row's largest id
        (OpenAI's rule, `ids.argmax()`); an id: at its first occurrence in the row.
    Change a field with dataclasses.replace(config, vocab_size=...).
    """
    embed_dim: int
    image_resolution: int
    vision_layers: "int | tuple[int, int, int, int]"
    vision_width: int
    vision_patch_size: "int | None"
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    vision_heads: int | None = None
    activation: str = "quick_gelu"
    vision_mlp_width: int | None = None
    transformer_mlp_width: int | None = None
    layer_norm_eps: float = 1e-5
    eos_token_id: int | None = None

    def __post_init__(self):
        if isinstance(self.vision_layers, (list, tuple)):            # a ResNet (JSON gives a list)
            layers = tuple(self.vision_layers)
            if len(layers) != 4 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in layers):
                raise ValueError(f"CLIPConfig.vision_layers = {self.vision_layers!r}: a ResNet needs "
                                 f"4 positive integers (Bottlenecks per stage), e.g. (3, 4, 6, 3)")
            object.__setattr__(self, "vision_layers", tuple(int(n) for n in layers))
        for field in ("vision", "transformer"):                 # 4 × width is spelled None, so
            if getattr(self, f"{field}_mlp_width") == 4 * getattr(self, f"{field}_width"):   # equal configs compare equal
                object.__setattr__(self, f"{field}_mlp_width", None)
        if self.vision_heads == self._default_vision_heads():           # likewise OpenAI's head rule
            object.__setattr__(self, "vision_heads", None)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("activation", "layer_norm_eps") or (field.name == "vision_layers" and self.is_resnet):
                continue
            if field.name == "eos_token_id" and value == 0:
                continue
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"CLIPConfig.{field.name} = {value!r}: must be a positive integer")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"CLIPConfig.activation = {self.activation!r}: miniclip computes "
                             f"{' or '.join(map(repr, ACTIVATIONS))}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and 0 < self.layer_norm_eps < 1):
            raise ValueError(f"CLIPConfig.layer_norm_eps = {self.layer_norm_eps!r}: must be a small positive number")
        if self.is_resnet:
            if self.image_resolution % 32:
                raise ValueError(f"image_resolution {self.image_resolution}: a ResNet tower halves the "
                                 f"grid five times, so it needs a multiple of 32")
            if (self.vision_width * 32) % self.num_vision_heads:
                raise ValueError(f"the attention pool's width {self.vision_width * 32} does not split "
                                 f"into {self.num_vision_heads} heads: set vision_heads to a divisor")
        elif self.vision_patch_size is None:
            raise ValueError("CLIPConfig.vision_patch_size is None: a ViT needs a patch size "
                             "(only a ResNet, vision_layers a 4-tuple, does without)")
        elif self.image_resolution % self.vision_patch_size:
            raise ValueError(f"image_resolution {self.image_resolution} is not divisible by the patch "
                             f"size (vision_patch_size {self.vision_patch_size}): change one of them")
        if not self.is_resnet and self.vision_width % self.num_vision_heads:
            raise ValueError(f"vision_width {self.vision_width} does not split into "
                             f"{self.num_vision_heads} heads: set vision_heads to a divisor")
        if self.transformer_width % self.transformer_heads:
            raise ValueError(f"transformer_width {self.transformer_width} does not split into "
                             f"{self.transformer_heads} heads: set transformer_heads to a divisor")

    @property
    def is_resnet(self):
        """True for a ResNet image tower (vision_layers a tuple), False for a ViT."""
        return isinstance(self.vision_layers, tuple)

    def _default_vision_heads(self):
        """OpenAI's rule: width // 64 for a ViT, width·32 // 64 for a ResNet's attention pool."""
        if self.is_resnet:
            return max(1, self.vision_width * 32 // 64)
        return max(1, self.vision_width // 64)

    @property
    def num_vision_heads(self):
        return self.vision_heads or self._default_vision_heads()

    @property
    def vision_mlp(self):
        """The hidden width of the image tower's MLPs."""
        return self.vision_mlp_width or 4 * self.vision_width

    @property
    def transformer_mlp(self):
        """The hidden width of the text tower's MLPs."""
        return self.transformer_mlp_width or 4 * self.transformer_width


def _openclip(embed_dim, image_size, patch_size, vision_layers, vision_width, head_width,
              text_width, text_heads, text_layers, mlp_ratio=4.0, activation="gelu"):
    """An OpenCLIP model config (its model_configs/<name>.json) as a CLIPConfig.

    OpenCLIP: vision heads = width // head_width, MLP width = int(width * mlp_ratio),
    "quick_gelu": true selects QuickGELU, else nn.GELU (exact).
    """
    return CLIPConfig(embed_dim=embed_dim, image_resolution=image_size, vision_layers=vision_layers,
                      vision_width=vision_width, vision_patch_size=patch_size, context_length=77,
                      vocab_size=49408, transformer_width=text_width, transformer_heads=text_heads,
                      transformer_layers=text_layers, vision_heads=vision_width // head_width,
                      activation=activation, vision_mlp_width=int(vision_width * mlp_ratio),
                      transformer_mlp_width=4 * text_width)


# OpenCLIP's architecture names whose blocks are OpenAI's (pre-LN, class-token
# pooling, argmax text pooling). Facts from open_clip's src/open_clip/model_configs.
_OPENCLIP = {
    "ViT-B-32": dict(embed_dim=512, image_size=224, patch_size=32, vision_layers=12, vision_width=768,
                     head_width=64, text_width=512, text_heads=8, text_layers=12),
    "ViT-B-16": dict(embed_dim=512, image_size=224, patch_size=16, vision_layers=12, vision_width=768,
                     head_width=64, text_width=512, text_heads=8, text_layers=12),
    "ViT-L-14": dict(embed_dim=768, image_size=224, patch_size=14, vision_layers=24, vision_width=1024,
                     head_width=64, text_width=768, text_heads=12, text_layers=12),
    "ViT-L-14-336": dict(embed_dim=768, image_size=336, patch_size=14, vision_layers=24, vision_width=1024,
                         head_width=64, text_width=768, text_heads=12, text_layers=12),
    "ViT-H-14": dict(embed_dim=1024, image_size=224, patch_size=14, vision_layers=32, vision_width=1280,
                     head_width=80, text_width=1024, text_heads=16, text_layers=24),
    "ViT-H-14-378": dict(embed_dim=1024, image_size=378, patch_size=14, vision_layers=32, vision_width=1280,
                         head_width=80, text_width=1024, text_heads=16, text_layers=24),
    "ViT-g-14": dict(embed_dim=1024, image_size=224, patch_size=14, vision_layers=40, vision_width=1408,
                     head_width=88, mlp_ratio=4.3637, text_width=1024, text_heads=16, text_layers=24),
    "ViT-bigG-14": dict(embed_dim=1280, image_size=224, patch_size=14, vision_layers=48, vision_width=1664,
                        head_width=104, mlp_ratio=4.9231, text_width=1280, text_heads=20, text_layers=32),
}
OPENCLIP_CONFIGS = {}
for _name, _facts in _OPENCLIP.items():
    OPENCLIP_CONFIGS[_name] = _openclip(**_facts)                                   # nn.GELU
    OPENCLIP_CONFIGS[_name + "-quickgelu"] = _openclip(**_facts, activation="quick_gelu")


_replace = dataclasses.replace
# OpenAI's released models (the shapes of their state dicts)
_VIT_B32 = CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                      vision_patch_size=32, context_length=77, vocab_size=49408,
                      transformer_width=512, transformer_heads=8, transformer_layers=12)
_VIT_L14 = _replace(_VIT_B32, embed_dim=768, vision_layers=24, vision_width=1024,
                    vision_patch_size=14, transformer_width=768, transformer_heads=12)
_RN50 = _replace(_VIT_B32, embed_dim=1024, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None)
# From scratch on 32×32 images (the trainer sets vocab_size from its tokenizer;
# heads = width // 64 as OpenAI infers them from weights). tiny: the default for
# shapes; 8×8 patches (a 4×4 grid) keep a CPU step short; a 2-layer text tower
# (captions are short: with 4 layers a step cost ~1.7× as much, and 1,000 steps
# left position at 94 %, where 600 steps of this one pass 99 %)
_TINY = CLIPConfig(embed_dim=128, image_resolution=32, vision_layers=4, vision_width=128,
                   vision_patch_size=8, context_length=24, vocab_size=1000,
                   transformer_width=128, transformer_heads=2, transformer_layers=2)
# cifar-tiny: tiny on context 16 (CIFAR's prompts are short and few): the
# default for CIFAR on a CPU
_CIFAR_TINY = _replace(_TINY, context_length=16)

CONFIGS = {
    "ViT-B/32": _VIT_B32,
    "ViT-B/16": _replace(_VIT_B32, vision_patch_size=16),
    "ViT-L/14": _VIT_L14,
    "ViT-L/14@336px": _replace(_VIT_L14, image_resolution=336),
    # ModifiedResNet image towers: vision_layers = Bottlenecks per stage, width = the stem's
    "RN50": _RN50,
    "RN101": _replace(_RN50, embed_dim=512, vision_layers=(3, 4, 23, 3)),
    "RN50x4": _replace(_RN50, embed_dim=640, image_resolution=288, vision_layers=(4, 6, 10, 6),
                       vision_width=80, transformer_width=640, transformer_heads=10),
    "RN50x16": _replace(_RN50, embed_dim=768, image_resolution=384, vision_layers=(6, 8, 18, 8),
                        vision_width=96, transformer_width=768, transformer_heads=12),
    "RN50x64": _replace(_RN50, embed_dim=1024, image_resolution=448, vision_layers=(3, 15, 36, 10),
                        vision_width=128, transformer_width=1024, transformer_heads=16),
    # micro: seconds-long test runs
    "micro": _replace(_TINY, embed_dim=64, vision_layers=2, vision_width=64, context_length=16,
                      transformer_width=64, transformer_heads=1, transformer_layers=2),
    "tiny": _TINY,
    # tiny-p4: the same widths on 4×4 patches (an 8×8 grid): finer detail, ~2.5× the cost
    "tiny-p4": _replace(_TINY, vision_patch_size=4),
    "cifar-tiny": _CIFAR_TINY,
    # micro-rn: a ResNet tower for seconds-long test runs
    "micro-rn": _replace(_CIFAR_TINY, embed_dim=64, vision_layers=(1, 1, 1, 1), vision_width=8,
                         vision_patch_size=None, transformer_width=64, transformer_heads=1),
    # cifar-rn: OpenAI's ModifiedResNet tower on 32×32 images: one Bottleneck per stage,
    # stem width 16 (stages of 64, 128, 256, 512 channels), an attention pool of width 512
    # (8 heads) over the final 1×1 grid plus the mean token; cifar-tiny's text tower.
    # 1.9 M parameters (cifar-tiny: 1.4 M)
    "cifar-rn": _replace(_CIFAR_TINY, vision_layers=(1, 1, 1, 1), vision_width=16,
                         vision_patch_size=None),
    # small: wider and deeper, for a GPU
    "small": _replace(_TINY, embed_dim=256, vision_layers=6, vision_width=256, vision_patch_size=4,
                      transformer_width=256, transformer_heads=4, transformer_layers=6),
    **OPENCLIP_CONFIGS,
}


# OpenCLIP model_cfg keys -> the value miniclip computes (any other value is refused);
# keys that do not change the numbers at inference are in _OPENCLIP_INERT.
_OPENCLIP_FIXED = {
    "custom_text": False, "multimodal_cfg": None, "init_logit_bias": None,
    "vision_cfg.ls_init_value": None, "vision_cfg.attentional_pool": False, "vision_cfg.no_ln_pre": False,
    "vision_cfg.pos_embed_type": "learnable", "vision_cfg.final_ln_after_pool": False,
    "vision_cfg.pool_type": "tok", "vision_cfg.global_average_pool": False, "vision_cfg.timm_model_name": None,
    "vision_cfg.input_patchnorm": False,
    "text_cfg.ls_init_value": None, "text_cfg.hf_model_name": None, "text_cfg.embed_cls": False,
    "text_cfg.pad_id": 0, "text_cfg.no_causal_mask": False, "text_cfg.final_ln_after_pool": False,
    "text_cfg.pool_type": "argmax", "text_cfg.proj_type": "linear", "text_cfg.proj_bias": False,
    "text_cfg.attn_pooler_heads": None,
}
_OPENCLIP_INERT = {"cast_dtype", "init_logit_scale", "output_dict", "vision_cfg.patch_dropout",
                   "vision_cfg.output_tokens", "text_cfg.output_tokens", "text_cfg.tokenizer_kwargs",
                   "text_cfg.hf_tokenizer_name", "vision_cfg.attn_pooler_queries", "vision_cfg.attn_pooler_heads",
                   "vision_cfg.image_mean", "vision_cfg.image_std", "vision_cfg.interpolation",
                   "vision_cfg.resize_mode", "text_cfg.vocab_size", "text_cfg.context_length",
                   "text_cfg.width", "text_cfg.heads", "text_cfg.layers", "text_cfg.mlp_ratio",
                   "vision_cfg.image_size", "vision_cfg.layers", "vision_cfg.width", "vision_cfg.head_width",
                   "vision_cfg.mlp_ratio", "vision_cfg.patch_size", "embed_dim", "quick_gelu",
                   "vision_cfg", "text_cfg", "vision_cfg.norm_kwargs", "text_cfg.norm_kwargs"}


def config_from_open_clip(model_cfg):
    """An OpenCLIP model config (open_clip_config.json's "model_cfg", or
    model_configs/<name>.json) -> CLIPConfig; anything miniclip cannot compute
    exactly (CoCa, SigLIP's bias, attention poolers, layer scale, timm or HF
    towers, other pooling or norm placement, ...) is a ValueError naming it."""
    flat = {}
    for key, value in model_cfg.items():
        flat[key] = value
        if key in ("vision_cfg", "text_cfg") and isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
    for key, value in flat.items():
        if key in _OPENCLIP_FIXED:
            if value != _OPENCLIP_FIXED[key] and not (value in (None, False) and _OPENCLIP_FIXED[key] in (None, False)):
                raise ValueError(f"OpenCLIP config {key} = {value!r}: miniclip computes only "
                                 f"{_OPENCLIP_FIXED[key]!r} here (OpenAI's CLIP structure), so this model is refused")
        elif key not in _OPENCLIP_INERT:
            raise ValueError(f"OpenCLIP config key {key!r} = {value!r} is not one miniclip knows: it may change "
                             f"the model, so the model is refused rather than computed approximately")
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if not isinstance(vision.get("layers", 12), int):
        raise ValueError(f"OpenCLIP vision_cfg.layers = {vision['layers']!r}: a ResNet image tower, "
                         f"which miniclip's ViT loader does not build")
    size = vision.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"OpenCLIP vision_cfg.image_size = {size}: miniclip takes square images only")
        size = size[0]
    eps = {vision.get("norm_kwargs", {}).get("eps", 1e-5), text.get("norm_kwargs", {}).get("eps", 1e-5)}
    if len(eps) > 1:
        raise ValueError(f"OpenCLIP towers with different LayerNorm eps {sorted(eps)}: miniclip uses one")
    width, text_width = vision.get("width", 768), text.get("width", 512)
    config = CLIPConfig(
        embed_dim=model_cfg["embed_dim"], image_resolution=size, vision_layers=vision.get("layers", 12),
        vision_width=width, vision_patch_size=vision.get("patch_size", 16),
        context_length=text.get("context_length", 77), vocab_size=text.get("vocab_size", 49408),
        transformer_width=text_width, transformer_heads=text.get("heads", 8),
        transformer_layers=text.get("layers", 12),
        vision_heads=width // vision.get("head_width", 64),
        activation="quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu",
        vision_mlp_width=int(width * vision.get("mlp_ratio", 4.0)),
        transformer_mlp_width=int(text_width * text.get("mlp_ratio", 4.0)),
        layer_norm_eps=eps.pop())
    return config


def get_config(name):
    """A named CLIPConfig: OpenAI's ('ViT-B/32', ...), OpenCLIP's ('ViT-B-32' (GELU),
    'ViT-B-32-quickgelu', 'ViT-H-14', ...) or miniclip's ('tiny', ...)."""
    if name not in CONFIGS:
        raise KeyError(f"no model config named {name!r}; the names are: {', '.join(CONFIGS)}")
    return CONFIGS[name]


class VisionTransformer(Module):
    """images (N, 3, R, R) -> features (N, E)."""

    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim, rng=None,
                 mlp_width=None, activation="quick_gelu", eps=1e-5):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        self.input_resolution, self.output_dim = input_resolution, output_dim
        grid = input_resolution // patch_size
        scale = width ** -0.5
        self.conv1 = PatchEmbedding(patch_size, width, rng=rng)
        self.class_embedding = Parameter(normal(rng, scale, (width,)))
        self.positional_embedding = Parameter(normal(rng, scale, (grid * grid + 1, width)))
        self.ln_pre = LayerNorm(width, eps=eps)
        self.transformer = Transformer(width, layers, heads, rng=rng, mlp_width=mlp_width,
                                       activation=activation, eps=eps)
        self.ln_post = LayerNorm(width, eps=eps)
        self.proj = Parameter(normal(rng, scale, (width, output_dim)))

    def forward(self, images):
        x = self.conv1(images)                                       # (N, G², W)
        N, _, W = x.shape
        xp = backend.get_array_module(x.data)
        # the class token, the same learned vector at the front of every sequence
        cls = self.class_embedding.reshape(1, 1, W) + xp.zeros((N, 1, W), dtype=x.dtype)
        x = F.concatenate([cls, x], axis=1)                          # (N, G² + 1, W)
        x = x + self.positional_embedding
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x[:, 0, :])                                 # the class token: (N, W)
        return x @ self.proj                                         # (N, E)


class CLIP(Module):
    """OpenAI's CLIP with a ViT or a ResNet image tower (config.vision_layers an int or a
    4-tuple).  CLIP(config, seed) initialises as OpenAI does.

    config: a CLIPConfig or the name of one ('tiny', 'ViT-B/32', ...).
    init=False: allocate the weights without drawing them (their values are
    zeros), for a model whose weights are loaded next (from_state_dict).
    """

    def __init__(self, config, seed=0, init=True):
        super().__init__()
        config = get_config(config) if isinstance(config, str) else config
        self.config = config
        rng = np.random.default_rng(seed) if init else NO_INIT
        c = config
        if c.is_resnet:
            self.visual = ModifiedResNet(c.vision_layers, c.embed_dim, c.num_vision_heads,
                                         input_resolution=c.image_resolution, width=c.vision_width,
                                         rng=rng)
        else:
            self.visual = VisionTransformer(c.image_resolution, c.vision_patch_size, c.vision_width,
                                            c.vision_layers, c.num_vision_heads, c.embed_dim, rng=rng,
                                            mlp_width=c.vision_mlp, activation=c.activation,
                                            eps=c.layer_norm_eps)
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads,
                                       attn_mask=causal_mask(c.context_length), rng=rng,
                                       mlp_width=c.transformer_mlp, activation=c.activation,
                                       eps=c.layer_norm_eps)
        self.token_embedding = Embedding(c.vocab_size, c.transformer_width, rng=rng)
        self.positional_embedding = Parameter(np.zeros((c.context_length, c.transformer_width),
                                                       dtype=np.float32))
        self.ln_final = LayerNorm(c.transformer_width, eps=c.layer_norm_eps)
        self.text_projection = Parameter(np.zeros((c.transformer_width, c.embed_dim), dtype=np.float32))
        self.logit_scale = Parameter(np.array(math.log(1 / 0.07), dtype=np.float32))
        if init:
            self.initialize_parameters(rng)

    def initialize_parameters(self, rng):
        """OpenAI's initialize_parameters: the text tower's weights (the image tower
        keeps PyTorch's defaults plus its own N(0, W^-½) embeddings and projection;
        Linear biases keep PyTorch's default U(±1/√in), attention biases are 0)."""
        width, layers = self.transformer.width, self.transformer.layers
        if isinstance(self.visual, ModifiedResNet):
            self.visual.initialize_parameters(rng)
        fill_normal(rng, self.token_embedding.weight, 0.02)
        fill_normal(rng, self.positional_embedding, 0.01)
        attn_std = width ** -0.5
        proj_std = width ** -0.5 * (2 * layers) ** -0.5     # residual branches: smaller with depth
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            fill_normal(rng, block.attn.in_proj_weight, attn_std)
            fill_normal(rng, block.attn.out_proj.weight, proj_std)
            fill_normal(rng, block.mlp.c_fc.weight, fc_std)
            fill_normal(rng, block.mlp.c_proj.weight, proj_std)
        fill_normal(rng, self.text_projection, width ** -0.5)

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    @property
    def device(self):
        return self.visual.conv1.weight.device

    # ---- the two towers -----------------------------------------------------------------
    def encode_image(self, images):
        """images: (N, 3, R, R) array or Tensor -> (N, E) Tensor (not normalised)."""
        images = self._as_input(images, "images")
        R = self.config.image_resolution
        if images.ndim != 4 or images.shape[1:] != (3, R, R):
            raise ValueError(f"images have shape {images.shape}; this model takes (N, 3, {R}, {R}): "
                             f"preprocess them to {R}×{R} RGB")
        return self.visual(images)

    def encode_text(self, ids):
        """ids: (N, C) token ids (end-of-text = each row's largest id) -> (N, E) Tensor."""
        ids = as_array(ids)
        if backend.device_of(ids) == "cpu":
            ids = np.asarray(ids)                 # checked on the host, then copied once
        C, V = self.config.context_length, self.config.vocab_size
        if ids.ndim != 2 or ids.shape[1] != C or ids.dtype.kind not in "iu":
            raise ValueError(f"token ids have shape {ids.shape} and dtype {ids.dtype}; this model "
                             f"takes integers of shape (N, {C}): tokenize with context_length={C}")
        # the range: free on the host; for ids already on a device, one read of two numbers
        xp = backend.get_array_module(ids)
        lo, hi = backend.to_numpy(xp.stack([ids.min(), ids.max()])).tolist() if ids.size else (0, 0)
        if lo < 0 or hi >= V:
            raise ValueError(f"token ids run from {lo} to {hi}, outside this "
                             f"model's vocabulary of {V} (ids 0..{V - 1}): tokenize with the "
                             f"tokenizer the model was made for")
        ids = backend.to_device(ids, self.device)
        xp = backend.get_array_module(ids)
        x = self.token_embedding(ids) + self.positional_embedding    # (N, C, W)
        x = self.transformer(x)                                      # causal: token t sees 0..t
        # pool at the end-of-text token (the largest id in each row, or the first
        # eos_token_id when the config names one); LayerNorm acts on each token
        # alone, so ln_final after pooling equals OpenAI's ln_final before it
        eos = self.config.eos_token_id
        where = ids.argmax(axis=-1) if eos is None else (ids == eos).argmax(axis=-1)
        x = x[xp.arange(len(ids)), where]                            # (N, W)
        x = self.ln_final(x)
        return x @ self.text_projection                              # (N, E)

    def forward(self, images, ids):
        """-> (logits_per_image (N_img, N_txt), logits_per_text (N_txt, N_img))."""
        image_features = F.normalize(self.encode_image(images), axis=-1)
        text_features = F.normalize(self.encode_text(ids), axis=-1)
        # cosine similarities, sharpened by the learned temperature e^logit_scale
        logits_per_image = self.logit_scale.exp() * (image_features @ text_features.T)
        return logits_per_image, logits_per_image.T

    def _as_input(self, x, what):
        """An array (made this model's device and dtype) or a Tensor (cast to the dtype) -> Tensor."""
        if isinstance(x, Tensor):
            if x.device != self.device:
                raise ValueError(f"{what} are on {x.device}, the model on {self.device}: "
                                 f"move them with .to({self.device!r})")
            return x if x.dtype == self.dtype else x.astype(self.dtype)
        return Tensor(backend.to_device(x, self.device).astype(self.dtype, copy=False))

    # ---- OpenAI weights -------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state_dict, dtype=None, config=None):
        """A CLIP holding these weights (OpenAI names).

        config: a CLIPConfig (or its name); None infers it from the shapes like
        OpenAI's build_model (QuickGELU, heads = width // 64). Any shape the
        config contradicts is an error naming the key. dtype: the model's dtype
        (default float32); the arrays are cast to it. No random weights are
        drawn: the model is allocated, then filled.
        """
        state = {k: v for k, v in state_dict.items() if k not in OPENAI_EXTRA_KEYS}
        if config is None:
            config = config_from_state_dict(state)
        model = cls(config, init=False)
        model.astype(np.float32 if dtype is None else dtype)
        model.load_state_dict(state, strict=True)
        return model.eval()

    def extra_repr(self):
        return f"{self.num_parameters():,} parameters"


# numbers OpenAI's .pt files keep beside the weights (not parameters)
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def count_layers(state_dict, prefix):
    """How many blocks: the distinct i in the names "<prefix><i>.*"."""
    return len({name[len(prefix):].split(".")[0] for name in state_dict if name.startswith(prefix)})


def config_from_state_dict(state_dict):
    """The CLIPConfig of an OpenAI-named state dict, read off the shapes as OpenAI's build_model does.

    What the shapes cannot show is OpenAI's: QuickGELU, heads = width // 64,
    LayerNorm eps 1e-5. The MLP widths are read from the c_fc weights.
    """
    resnet = any(name.startswith("visual.layer1.") for name in state_dict)
    visual_needed = (("visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding") if resnet
                     else ("visual.conv1.weight", "visual.positional_embedding"))
    for needed in visual_needed + ("text_projection", "positional_embedding",
                                   "token_embedding.weight", "ln_final.weight"):
        if needed not in state_dict:
            raise KeyError(f"the state dict has no {needed!r}: not an OpenAI-named CLIP state dict "
                           f"(Hugging Face names are converted by miniclip.pretrained)")

    def shape(name):
        return tuple(np.shape(as_array(state_dict[name])))

    text_width = shape("ln_final.weight")[0]
    if resnet:   # OpenAI's build_model: depths from the layerK.<i> keys, width from layer1's conv1
        vision_layers = tuple(count_layers(state_dict, f"visual.layer{k}.") for k in (1, 2, 3, 4))
        vision_width = shape("visual.layer1.0.conv1.weight")[0]
        grid = round((shape("visual.attnpool.positional_embedding")[0] - 1) ** 0.5)
        image_resolution, patch = 32 * grid, None
    else:
        vision_width, _, _, patch = shape("visual.conv1.weight")
        grid = round((shape("visual.positional_embedding")[0] - 1) ** 0.5)
        vision_layers, image_resolution = count_layers(state_dict, "visual.transformer.resblocks."), patch * grid

    def mlp_width(prefix, width):                      # c_fc.weight: (hidden, W); None if 4W
        name = prefix + "0.mlp.c_fc.weight"
        hidden = shape(name)[0] if name in state_dict else 4 * width
        return None if hidden == 4 * width else hidden
    return CLIPConfig(
        embed_dim=shape("text_projection")[1],
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=shape("positional_embedding")[0],
        vocab_size=shape("token_embedding.weight")[0],
        transformer_width=text_width,
        transformer_heads=max(1, text_width // 64),
        transformer_layers=count_layers(state_dict, "transformer.resblocks."),
        vision_mlp_width=mlp_width("visual.transformer.resblocks.", vision_width),
        transformer_mlp_width=mlp_width("transformer.resblocks.", text_width),
    )


def causal_mask(context_length, dtype=np.float32):
    """(C, C) additive mask: 0 on and below the diagonal, −inf above (no peeking ahead)."""
    return np.triu(np.full((context_length, context_length), -np.inf, dtype=dtype), k=1)


def normal(rng, std, shape):
    """A float32 array drawn from N(0, std²) (uninitialised for rng=NO_INIT)."""
    if rng is NO_INIT:
        return np.zeros(shape, dtype=np.float32)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def fill_normal(rng, param, std):
    """Overwrite a parameter, in place, with N(0, std²) values."""
    values = rng.standard_normal(param.shape, dtype=np.float32) * np.float32(std)
    param.data[...] = backend.to_device(values, param.device)
