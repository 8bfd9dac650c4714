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
from miniclip.autograd.tensor import Tensor
from miniclip.nn import Embedding, LayerNorm, Module, Parameter, PatchEmbedding, Transformer


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """The arguments of OpenAI's CLIP(...): everything that fixes the shapes.

    vision_heads: None means vision_width // 64 (OpenAI's rule), at least 1.
    Change a field with dataclasses.replace(config, vocab_size=...).
    """
    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    vision_heads: int | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"CLIPConfig.{field.name} = {value!r}: must be a positive integer")
        if self.image_resolution % self.vision_patch_size:
            raise ValueError(f"image_resolution {self.image_resolution} is not divisible by the patch "
                             f"size (vision_patch_size {self.vision_patch_size}): change one of them")
        if self.vision_width % self.num_vision_heads:
            raise ValueError(f"vision_width {self.vision_width} does not split into "
                             f"{self.num_vision_heads} heads: set vision_heads to a divisor")
        if self.transformer_width % self.transformer_heads:
            raise ValueError(f"transformer_width {self.transformer_width} does not split into "
                             f"{self.transformer_heads} heads: set transformer_heads to a divisor")

    @property
    def num_vision_heads(self):
        return self.vision_heads or max(1, self.vision_width // 64)


CONFIGS = {
    # OpenAI's released ViT models (the shapes of their state dicts)
    "ViT-B/32": CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                           vision_patch_size=32, context_length=77, vocab_size=49408,
                           transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-B/16": CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                           vision_patch_size=16, context_length=77, vocab_size=49408,
                           transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-L/14": CLIPConfig(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                           vision_patch_size=14, context_length=77, vocab_size=49408,
                           transformer_width=768, transformer_heads=12, transformer_layers=12),
    "ViT-L/14@336px": CLIPConfig(embed_dim=768, image_resolution=336, vision_layers=24,
                                 vision_width=1024, vision_patch_size=14, context_length=77,
                                 vocab_size=49408, transformer_width=768, transformer_heads=12,
                                 transformer_layers=12),
    # from scratch on 32×32 images (the trainer sets vocab_size from its tokenizer;
    # heads = width // 64 as OpenAI infers them from weights).
    # micro: seconds-long test runs.
    "micro": CLIPConfig(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64,
                        vision_patch_size=8, context_length=16, vocab_size=1000,
                        transformer_width=64, transformer_heads=1, transformer_layers=2),
    # tiny: the default for shapes; 8×8 patches (a 4×4 grid) keep a CPU step short
    "tiny": CLIPConfig(embed_dim=128, image_resolution=32, vision_layers=4, vision_width=128,
                       vision_patch_size=8, context_length=24, vocab_size=1000,
                       transformer_width=128, transformer_heads=2, transformer_layers=4),
    # tiny-p4: the same widths on 4×4 patches (an 8×8 grid): finer detail, ~2.5× the cost
    "tiny-p4": CLIPConfig(embed_dim=128, image_resolution=32, vision_layers=4, vision_width=128,
                          vision_patch_size=4, context_length=24, vocab_size=1000,
                          transformer_width=128, transformer_heads=2, transformer_layers=4),
    # cifar-tiny: tiny's image tower, a 2-layer text tower on context 16 (CIFAR's
    # prompts are short and few): the default for CIFAR on a CPU
    "cifar-tiny": CLIPConfig(embed_dim=128, image_resolution=32, vision_layers=4,
                             vision_width=128, vision_patch_size=8, context_length=16,
                             vocab_size=1000, transformer_width=128, transformer_heads=2,
                             transformer_layers=2),
    # small: wider and deeper, for a GPU
    "small": CLIPConfig(embed_dim=256, image_resolution=32, vision_layers=6, vision_width=256,
                        vision_patch_size=4, context_length=24, vocab_size=1000,
                        transformer_width=256, transformer_heads=4, transformer_layers=6),
}


def get_config(name):
    """A named CLIPConfig ('ViT-B/32', 'tiny', ...)."""
    if name not in CONFIGS:
        raise KeyError(f"no model config named {name!r}; the names are: {', '.join(CONFIGS)}")
    return CONFIGS[name]


class VisionTransformer(Module):
    """images (N, 3, R, R) -> features (N, E)."""

    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim, rng=None):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        self.input_resolution, self.output_dim = input_resolution, output_dim
        grid = input_resolution // patch_size
        scale = width ** -0.5
        self.conv1 = PatchEmbedding(patch_size, width, rng=rng)
        self.class_embedding = Parameter(normal(rng, scale, (width,)))
        self.positional_embedding = Parameter(normal(rng, scale, (grid * grid + 1, width)))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, rng=rng)
        self.ln_post = LayerNorm(width)
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
    """OpenAI's CLIP with a ViT image tower.  CLIP(config, seed) initialises as OpenAI does.

    config: a CLIPConfig or the name of one ('tiny', 'ViT-B/32', ...).
    """

    def __init__(self, config, seed=0):
        super().__init__()
        config = get_config(config) if isinstance(config, str) else config
        self.config = config
        rng = np.random.default_rng(seed)
        c = config
        self.visual = VisionTransformer(c.image_resolution, c.vision_patch_size, c.vision_width,
                                        c.vision_layers, c.num_vision_heads, c.embed_dim, rng=rng)
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads,
                                       attn_mask=causal_mask(c.context_length), rng=rng)
        self.token_embedding = Embedding(c.vocab_size, c.transformer_width, rng=rng)
        self.positional_embedding = Parameter(np.zeros((c.context_length, c.transformer_width),
                                                       dtype=np.float32))
        self.ln_final = LayerNorm(c.transformer_width)
        self.text_projection = Parameter(np.zeros((c.transformer_width, c.embed_dim), dtype=np.float32))
        self.logit_scale = Parameter(np.array(math.log(1 / 0.07), dtype=np.float32))
        self.initialize_parameters(rng)

    def initialize_parameters(self, rng):
        """OpenAI's initialize_parameters: the text tower's weights (the image tower
        keeps PyTorch's defaults plus its own N(0, W^-½) embeddings and projection;
        Linear biases keep PyTorch's default U(±1/√in), attention biases are 0)."""
        width, layers = self.transformer.width, self.transformer.layers
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
        ids = ids.data if isinstance(ids, Tensor) else ids
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
        # pool at the end-of-text token (the largest id in each row); LayerNorm acts on
        # each token alone, so ln_final after pooling equals OpenAI's ln_final before it
        x = x[xp.arange(len(ids)), ids.argmax(axis=-1)]              # (N, W)
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
    def from_state_dict(cls, state_dict, dtype=None):
        """A CLIP holding these weights (OpenAI names), its config inferred like OpenAI's build_model.

        dtype: the model's dtype (default float32); the arrays are cast to it.
        """
        state = {k: v for k, v in state_dict.items() if k not in _NOT_PARAMETERS}
        model = cls(config_from_state_dict(state))
        model.astype(np.float32 if dtype is None else dtype)
        model.load_state_dict(state, strict=True)
        return model.eval()

    def extra_repr(self):
        return f"{self.num_parameters():,} parameters"


_NOT_PARAMETERS = ("input_resolution", "context_length", "vocab_size")   # in OpenAI's .pt files


def config_from_state_dict(state_dict):
    """The CLIPConfig of an OpenAI-named state dict, read off the shapes as OpenAI's build_model does."""
    if any(name.startswith("visual.layer1") for name in state_dict):
        raise ValueError("this is a ResNet CLIP (RN50, ...): miniclip implements the ViT image "
                         "tower only; use a ViT model such as 'ViT-B/32'")
    for needed in ("visual.conv1.weight", "visual.positional_embedding", "text_projection",
                   "positional_embedding", "token_embedding.weight", "ln_final.weight"):
        if needed not in state_dict:
            raise KeyError(f"the state dict has no {needed!r}: not an OpenAI-named CLIP state dict "
                           f"(Hugging Face names are converted by miniclip.pretrained)")

    def shape(name):
        return tuple(np.shape(state_dict[name].data if isinstance(state_dict[name], Tensor)
                              else state_dict[name]))

    def count_layers(prefix):                          # distinct i in "<prefix><i>.*"
        return len({name[len(prefix):].split(".")[0] for name in state_dict
                    if name.startswith(prefix)})

    vision_width, _, _, patch = shape("visual.conv1.weight")
    grid = round((shape("visual.positional_embedding")[0] - 1) ** 0.5)
    text_width = shape("ln_final.weight")[0]
    return CLIPConfig(
        embed_dim=shape("text_projection")[1],
        image_resolution=patch * grid,
        vision_layers=count_layers("visual.transformer.resblocks."),
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=shape("positional_embedding")[0],
        vocab_size=shape("token_embedding.weight")[0],
        transformer_width=text_width,
        transformer_heads=max(1, text_width // 64),
        transformer_layers=count_layers("transformer.resblocks."),
    )


def causal_mask(context_length, dtype=np.float32):
    """(C, C) additive mask: 0 on and below the diagonal, −inf above (no peeking ahead)."""
    return np.triu(np.full((context_length, context_length), -np.inf, dtype=dtype), k=1)


def normal(rng, std, shape):
    """A float32 array drawn from N(0, std²)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def fill_normal(rng, param, std):
    """Overwrite a parameter, in place, with N(0, std²) values."""
    values = rng.standard_normal(param.shape, dtype=np.float32) * np.float32(std)
    param.data[...] = backend.to_device(values, param.device)
