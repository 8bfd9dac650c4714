"""CLIP: an image tower and a text tower that embed into one space.

    model = CLIP("tiny")                                     # or CLIP(CLIPConfig(...))
    logits_per_image, logits_per_text = model(images, ids)   # (N, N) similarities ·e^logit_scale
                                                             # (+ logit_bias for a SigLIP model)

The names, shapes and math are OpenAI's (`clip/model.py`), so OpenAI's
weights load 1:1 (`CLIP.from_state_dict`, which reads the config off the
shapes as OpenAI's build_model does). The config itself (CLIPConfig, the
named configs) is miniclip/config.py; reading weights files is
miniclip/formats and miniclip/pretrained.py. One difference in layout:
miniclip keeps sequences batch first, (N, T, W), where OpenAI transposes to
(T, N, W) for PyTorch's attention; the numbers are the same.

Image tower (VisionTransformer):
    (N, 3, R, R) -> patches (N, G², W) -> [class token; patches] + positions
    -> ln_pre -> transformer -> ln_post(class token) @ proj -> (N, E)
Text tower (in CLIP itself, as OpenAI has it):
    ids (N, C) -> token embedding + positions -> causal transformer
    -> ln_final at each row's end-of-text token (its largest id) @ text_projection -> (N, E)
"""
import dataclasses

import numpy as np

import miniclip.functional as F
from miniclip import backend
from miniclip.autograd import switch
from miniclip.autograd.tensor import Tensor, as_array
from miniclip.nn import NO_INIT, Embedding, LayerNorm, Module, Parameter, PatchEmbedding, Transformer
from miniclip.nn.resnet import ModifiedResNet

from miniclip.config import CLIPConfig, get_config


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
        # the temperature τ = e^−logit_scale; a SigLIP model also learns a bias (OpenCLIP's names)
        self.logit_scale = Parameter(np.array(c.logit_scale_init, dtype=np.float32))
        if c.has_logit_bias:
            self.logit_bias = Parameter(np.array(c.logit_bias_init, dtype=np.float32))
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
        images = self.checked_images(images)
        return self.visual(images)

    def encode_text(self, ids):
        """ids: (N, C) token ids (end-of-text = each row's largest id) -> (N, E) Tensor."""
        ids = self.checked_ids(ids)
        xp = backend.get_array_module(ids)
        eos = self.config.eos_token_id
        # the fast tier drops the positions after the batch's last end token (ids (N, T), T ≤ C):
        # causal attention and end-token pooling make them change nothing (fast/text.py)
        trim = switch.fast_version("CLIP.text_ids")
        ids = trim(ids, eos, self.transformer.attn_mask) if trim else ids
        x = self.token_embedding(ids) + self.positional_embedding[:ids.shape[1]]   # (N, T, W)
        x = self.transformer(x)                                      # causal: token t sees 0..t
        # pool at the end-of-text token (the largest id in each row, or the first
        # eos_token_id when the config names one); LayerNorm acts on each token
        # alone, so ln_final after pooling equals OpenAI's ln_final before it
        where = ids.argmax(axis=-1) if eos is None else (ids == eos).argmax(axis=-1)
        x = x[xp.arange(len(ids)), where]                            # (N, W)
        x = self.ln_final(x)
        return x @ self.text_projection                              # (N, E)

    def forward(self, images, ids):
        """-> (logits_per_image (N_img, N_txt), logits_per_text (N_txt, N_img)).

        A SigLIP model (config.loss "siglip") adds its logit_bias to both."""
        image_features = F.normalize(self.encode_image(images), axis=-1)
        text_features = F.normalize(self.encode_text(ids), axis=-1)
        # cosine similarities, sharpened by the learned temperature e^logit_scale
        logits_per_image = self.logit_scale.exp() * (image_features @ text_features.T)
        if self.config.has_logit_bias:
            logits_per_image = logits_per_image + self.logit_bias     # SigLIP: e^t · x yᵀ + b
        return logits_per_image, logits_per_image.T

    # ---- input checks: one clear error before any arithmetic ----------------------------
    def checked_images(self, images):
        """An array (made this model's device and dtype) or a Tensor (cast to the dtype) of
        shape (N, 3, R, R) -> Tensor; anything else is a ValueError saying what to do."""
        if isinstance(images, Tensor):
            if images.device != self.device:
                raise ValueError(f"images are on {images.device}, the model on {self.device}: "
                                 f"move them with .to({self.device!r})")
            images = images if images.dtype == self.dtype else images.astype(self.dtype)
        else:
            images = Tensor(backend.to_device(images, self.device).astype(self.dtype, copy=False))
        R = self.config.image_resolution
        if images.ndim != 4 or images.shape[1:] != (3, R, R):
            raise ValueError(f"images have shape {images.shape}; this model takes (N, 3, {R}, {R}): "
                             f"preprocess them to {R}×{R} RGB")
        return images

    def checked_ids(self, ids):
        """Token ids (N, C), integers inside the vocabulary -> an int array on this model's
        device; anything else is a ValueError saying what to do."""
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
        return backend.to_device(ids, self.device)

    # ---- OpenAI weights -------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state_dict, dtype=None, config=None):
        """A CLIP holding these weights (OpenAI names).

        config: a CLIPConfig (or its name); None infers it from the shapes like
        OpenAI's build_model (QuickGELU, heads = width // 64). Any shape the
        config contradicts is an error naming the key. Weights with a
        `logit_bias` (OpenCLIP's SigLIP head) make a SigLIP model (loss
        "siglip", see with_loss_of_weights). dtype: the model's dtype
        (default float32); the arrays are cast to it. No random weights are
        drawn: the model is allocated, then filled.
        """
        state = {k: v for k, v in state_dict.items() if k not in OPENAI_EXTRA_KEYS}
        if config is None:
            config = config_from_state_dict(state)
        config = with_loss_of_weights(get_config(config) if isinstance(config, str) else config, state)
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


def with_loss_of_weights(config, names):
    """config, made a SigLIP one (loss "siglip") when the weights' names include
    'logit_bias' (a SigLIP-trained CLIP) and it is a CLIP one; else config itself.

    names: the weights' names (a state dict, or {name: shape})."""
    if "logit_bias" in names and not config.has_logit_bias:
        return dataclasses.replace(config, loss="siglip", init_logit_bias=None)
    return config


def config_from_state_dict(state_dict):
    """The CLIPConfig of an OpenAI-named state dict, read off the shapes as OpenAI's build_model does.

    What the shapes cannot show is OpenAI's: QuickGELU, heads = width // 64,
    LayerNorm eps 1e-5. The MLP widths are read from the c_fc weights. A
    `logit_bias` (OpenCLIP's SigLIP head) makes it a SigLIP config (loss "siglip").
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
        loss="siglip" if "logit_bias" in state_dict else "clip",
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
