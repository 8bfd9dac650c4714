"""CLIPConfig and the named configs: everything that fixes a CLIP's shapes.

    config = get_config("tiny")                     # miniclip's, OpenAI's or OpenCLIP's names
    config = dataclasses.replace(config, vocab_size=986)

The named configs are OpenAI's released models ('ViT-B/32', 'RN50', ...),
OpenCLIP's architecture names whose blocks are OpenAI's ('ViT-B-32' (exact
GELU), 'ViT-B-32-quickgelu', 'ViT-H-14', ...) and miniclip's own small ones
for training from scratch ('micro', 'tiny', 'cifar-tiny', ...).
Reading a config out of a file (Hugging Face's config.json, OpenCLIP's
open_clip_config.json) is in miniclip/formats.
"""
import dataclasses
import math

import numpy as np


ACTIVATIONS = ("quick_gelu", "gelu")   # OpenAI's x·σ(1.702x); the exact erf GELU (torch.nn.GELU)
# The loss a CLIP is trained with -> its initial (logit_scale, logit_bias) (None: no bias).
# CLIP (OpenAI): τ = 0.07, no bias. SigLIP (Zhai et al. 2023): t = ln 10 (τ = 0.1), b = −10.
LOSSES = {"clip": (math.log(1 / 0.07), None), "siglip": (math.log(10), -10.0)}
MAX_LOGIT_SCALE = math.log(100)        # the clamp after every step (OpenCLIP's, both losses): τ >= 0.01


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
    loss: the loss the model is trained with, "clip" (softmax, OpenAI's) or "siglip"
        (sigmoid; the model then has a learned logit_bias added to its logits).
    init_logit_scale: the initial logit_scale t (temperature τ = e^−t), in [0, ln 100];
        None means the loss's default (LOSSES: ln(1/0.07) for clip, ln 10 for siglip).
    init_logit_bias: siglip only: the initial logit_bias; None means −10.
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
    loss: str = "clip"
    init_logit_scale: float | None = None
    init_logit_bias: float | None = None

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
            if field.name in ("activation", "layer_norm_eps", "loss", "init_logit_scale",
                              "init_logit_bias") or (field.name == "vision_layers" and self.is_resnet):
                continue
            if field.name == "eos_token_id" and value == 0:
                continue
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
                raise ValueError(f"CLIPConfig.{field.name} = {value!r}: must be a positive integer")
        if self.eos_token_id is not None and self.eos_token_id >= self.vocab_size:
            raise ValueError(f"CLIPConfig.eos_token_id = {self.eos_token_id}: not an id of the "
                             f"vocabulary of {self.vocab_size} (ids 0..{self.vocab_size - 1})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"CLIPConfig.activation = {self.activation!r}: miniclip computes "
                             f"{' or '.join(map(repr, ACTIVATIONS))}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and 0 < self.layer_norm_eps < 1):
            raise ValueError(f"CLIPConfig.layer_norm_eps = {self.layer_norm_eps!r}: must be a small positive number")
        self._check_logits()
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

    def _check_logits(self):
        """loss, init_logit_scale, init_logit_bias: valid, and a value equal to the loss's default stored as None."""
        if self.loss not in LOSSES:
            raise ValueError(f"CLIPConfig.loss = {self.loss!r}: miniclip trains with "
                             f"{' or '.join(map(repr, LOSSES))}")
        scale, bias = LOSSES[self.loss]
        for name, value in (("init_logit_scale", self.init_logit_scale), ("init_logit_bias", self.init_logit_bias)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                                      or not math.isfinite(value)):
                raise ValueError(f"CLIPConfig.{name} = {value!r}: must be a finite number (or None: the loss's default)")
        if self.init_logit_scale is not None and not 0 <= self.init_logit_scale <= MAX_LOGIT_SCALE + 1e-12:
            raise ValueError(f"CLIPConfig.init_logit_scale = {self.init_logit_scale!r}: must be in [0, ln 100] "
                             f"(a temperature e^−t between 0.01 and 1; training clamps it there)")
        if self.init_logit_bias is not None and bias is None:
            raise ValueError(f"CLIPConfig.init_logit_bias = {self.init_logit_bias!r}: only loss 'siglip' has a "
                             f"logit bias; leave it None for loss {self.loss!r}")
        if self.init_logit_scale == scale:
            object.__setattr__(self, "init_logit_scale", None)
        if self.init_logit_bias == bias:
            object.__setattr__(self, "init_logit_bias", None)
        for name in ("init_logit_scale", "init_logit_bias"):       # JSON-able plain floats
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def has_logit_bias(self):
        """True for a SigLIP model: a learned logit_bias is added to its logits."""
        return LOSSES[self.loss][1] is not None

    @property
    def logit_scale_init(self):
        """The initial logit_scale: init_logit_scale, or the loss's default."""
        return LOSSES[self.loss][0] if self.init_logit_scale is None else self.init_logit_scale

    @property
    def logit_bias_init(self):
        """The initial logit_bias (None: the model has none)."""
        return LOSSES[self.loss][1] if self.init_logit_bias is None else self.init_logit_bias

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


def get_config(name):
    """A named CLIPConfig: OpenAI's ('ViT-B/32', ...), OpenCLIP's ('ViT-B-32' (GELU),
    'ViT-B-32-quickgelu', 'ViT-H-14', ...) or miniclip's ('tiny', ...)."""
    if name not in CONFIGS:
        raise KeyError(f"no model config named {name!r}; the names are: {', '.join(CONFIGS)}")
    return CONFIGS[name]


