"""Hugging Face's CLIPModel format: its names, its config.json, its tokenizer
and processor files, and export_hf, which writes a folder transformers loads.

    state = hf_to_openai(read_safetensors("clip-hf/model.safetensors"))   # OpenAI names
    config = read_hf_config("clip-hf/config.json", state)                # -> CLIPConfig
    export_hf(model, "clip-hf/")       # model.safetensors, config.json, tokenizer files
    tokenizer = read_hf_tokenizer("clip-hf/")        # its vocab.json + merges.txt

The weights are OpenAI's renamed, with the packed attention in-projection
split into q/k/v and the two projections transposed.
"""
import collections
import dataclasses
import json
import os
import re
import warnings

import numpy as np

from miniclip.backend import to_numpy
from miniclip.config import ACTIVATIONS
from miniclip.data.transforms import MEAN, STD
from miniclip.fileio import atomic_write
from miniclip.formats.checks import CheckpointError
from miniclip.formats.config_json import ConfigJSON
from miniclip.formats.safetensors import write_safetensors
from miniclip.model import OPENAI_EXTRA_KEYS, config_from_state_dict
from miniclip.tokenizer import EOT_TEXT, SOT_TEXT, Tokenizer


# OpenAI name -> HF name, outside the transformer blocks.
_HF_NAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: HF's spelling
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}
# OpenAI keeps these (width, embed) and multiplies x @ P; HF keeps a Linear weight (embed, width).
_HF_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
# Block prefix, OpenAI -> HF.
_HF_TOWERS = {"visual.transformer.resblocks.": "vision_model.encoder.layers.",
              "transformer.resblocks.": "text_model.encoder.layers."}
# Inside a block (after "<i>."), OpenAI -> HF. attn.in_proj_* is split into q/k/v.
_HF_BLOCK = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "attn.out_proj.": "self_attn.out_proj.",
             "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
_HF_QKV = re.compile(r"(text|vision)_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")


def openai_to_hf(state):
    """OpenAI-named {name: array} -> Hugging Face CLIPModel names.

    in_proj_weight (3W, W) = [q; k; v] row blocks -> q_proj/k_proj/v_proj (W, W);
    visual.proj / text_projection (W, E) -> *_projection.weight (E, W).
    The int keys of OpenAI's archives (input_resolution, ...) are dropped.
    """
    hf = {}
    for name, value in state.items():
        if name in OPENAI_EXTRA_KEYS:
            continue
        if name in _HF_NAMES:
            hf[_HF_NAMES[name]] = value
        elif name in _HF_TRANSPOSED:
            hf[_HF_TRANSPOSED[name]] = np.ascontiguousarray(value.T)
        else:
            hf.update(_openai_block_to_hf(name, value))
    return hf


def _openai_block_to_hf(name, value):
    for openai_prefix, hf_prefix in _HF_TOWERS.items():
        if name.startswith(openai_prefix):
            layer, rest = name[len(openai_prefix):].split(".", 1)
            layer_prefix = f"{hf_prefix}{layer}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]  # weight | bias
                q, k, v = np.split(value, 3, axis=0)  # three equal row blocks
                return {f"{layer_prefix}self_attn.{p}_proj.{kind}": np.ascontiguousarray(x)
                        for p, x in zip("qkv", (q, k, v))}
            for openai_part, hf_part in _HF_BLOCK.items():
                if rest.startswith(openai_part):
                    return {layer_prefix + hf_part + rest[len(openai_part):]: value}
    raise CheckpointError(f"no Hugging Face name for {name!r}: not a CLIP ViT state-dict key")


def hf_to_openai(hf_state, hf_config=None):
    """Hugging Face CLIPModel {name: array} -> OpenAI names (see openai_to_hf).

    `hf_config`: the parsed config.json (or its ConfigJSON); when given, it is checked for what
    miniclip cannot compute (see config_from_hf, which reads the rest of it).
    """
    if hf_config is not None:
        check_hf_config(hf_config)
    from_hf = {hf: openai for openai, hf in _HF_NAMES.items()}
    transposed = {hf: openai for openai, hf in _HF_TRANSPOSED.items()}
    state, qkv = {}, collections.defaultdict(dict)
    for name, value in hf_state.items():
        if name.endswith("embeddings.position_ids"):
            continue  # a constant arange buffer, not a weight
        match = _HF_QKV.fullmatch(name)
        if match:
            tower, layer, part, kind = match.groups()
            prefix = "visual.transformer.resblocks." if tower == "vision" else "transformer.resblocks."
            qkv[f"{prefix}{layer}.attn.in_proj_{kind}"][part] = value
        elif name in from_hf:
            state[from_hf[name]] = value
        elif name in transposed:
            state[transposed[name]] = np.ascontiguousarray(value.T)
        else:
            state[_hf_block_to_openai(name)] = value
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{name}: the checkpoint has only the {sorted(parts)} projections, not q, k and v")
        state[name] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return state


def _hf_block_to_openai(name):
    for openai_prefix, hf_prefix in _HF_TOWERS.items():
        if name.startswith(hf_prefix):
            layer, rest = name[len(hf_prefix):].split(".", 1)
            for openai_part, hf_part in _HF_BLOCK.items():
                if rest.startswith(hf_part):
                    return f"{openai_prefix}{layer}.{openai_part}{rest[len(hf_part):]}"
    raise CheckpointError(f"unexpected Hugging Face key {name!r}: not part of a CLIPModel with a ViT image tower")




# --------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------

# transformers' defaults for keys a config.json may leave out (CLIPTextConfig, CLIPVisionConfig)
HF_DEFAULTS = {"text_config": {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "num_attention_heads": 8,
                               "eos_token_id": 49407},
               "vision_config": {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "num_attention_heads": 12}}


def as_config_json(hf_config, path="config.json"):
    """A parsed config.json (dict) or a ConfigJSON -> ConfigJSON (naming `path` in errors)."""
    return hf_config if isinstance(hf_config, ConfigJSON) else ConfigJSON(path, hf_config)


def check_hf_config(hf_config):
    """Refuse a Hugging Face config whose model miniclip cannot compute exactly.

    hf_config: a ConfigJSON (or the parsed dict). Every value read is type-checked
    (CheckpointError naming the file and key). -> {tower: (activation, eps)}.
    """
    cfg = as_config_json(hf_config)
    model_type = cfg.string("model_type", "clip")
    if model_type != "clip":
        raise CheckpointError(
            f"{cfg.path}: model_type {model_type!r}: miniclip computes CLIP (model_type 'clip', "
            f"OpenAI's architecture with a ViT image tower), not {model_type}")
    towers = {}
    for tower in ("text_config", "vision_config"):
        section, defaults = cfg.section(tower), HF_DEFAULTS[tower]
        towers[tower] = (section.string("hidden_act", defaults["hidden_act"], choices=ACTIVATIONS),
                         section.number("layer_norm_eps", defaults["layer_norm_eps"], positive=True, high=0.5))
    acts = {tower: act for tower, (act, _) in towers.items()}
    eps = {tower: e for tower, (_, e) in towers.items()}
    if len(set(acts.values())) > 1 or len(set(eps.values())) > 1:
        raise CheckpointError(
            f"{cfg.path} gives the towers different activations {acts} or LayerNorm eps {eps}: "
            f"miniclip uses one activation and one eps for both towers")
    return towers


def config_from_hf(hf_config, state, path="config.json"):
    """A Hugging Face config.json (parsed, or a ConfigJSON) + its (OpenAI-named) weights -> CLIPConfig.

    The shapes give the widths, layers, patch, resolution, vocabulary and MLP
    widths; config.json gives what they cannot: heads, activation, eps and the
    end-of-text rule (eos_token_id 2 is HF's legacy "pool at the largest id",
    miniclip's rule; any other id pools at its first occurrence, as HF does,
    and must be an id of the vocabulary). Each value is type- and range-checked:
    a bad one is a CheckpointError naming the file and key.
    """
    cfg = as_config_json(hf_config, path)
    towers = check_hf_config(cfg)
    config = config_from_state_dict(state)
    text, vision = cfg.section("text_config"), cfg.section("vision_config")
    for section, prefix, mlp in ((text, "transformer.resblocks.0", config.transformer_mlp),
                                 (vision, "visual.transformer.resblocks.0", config.vision_mlp)):
        size = section.integer("intermediate_size", None, low=1)
        if size is not None and size != mlp:
            raise CheckpointError(f"{cfg.path}: {section.where}intermediate_size is {size}, but the weights' "
                                  f"{prefix}.mlp.c_fc.weight has {mlp} rows: the config is not this model's")
    eos = text.integer("eos_token_id", HF_DEFAULTS["text_config"]["eos_token_id"],
                       low=0, high=config.vocab_size - 1)
    text_heads = text.integer("num_attention_heads", HF_DEFAULTS["text_config"]["num_attention_heads"],
                              low=1, high=config.transformer_width)
    vision_heads = vision.integer("num_attention_heads", HF_DEFAULTS["vision_config"]["num_attention_heads"],
                                  low=1, high=config.vision_width)
    activation, eps = towers["text_config"]
    try:
        return dataclasses.replace(config, transformer_heads=text_heads, vision_heads=vision_heads,
                                   activation=activation, layer_norm_eps=float(eps),
                                   eos_token_id=None if eos == 2 else eos)
    except ValueError as e:
        raise CheckpointError(f"{cfg.path} does not fit its weights: {e}") from e


def read_hf_config(path, state):
    """config.json at `path` + its (OpenAI-named) weights -> CLIPConfig (see config_from_hf)."""
    return config_from_hf(ConfigJSON.read(path), state)


def hf_config(state, config=None):
    """The config.json of a Hugging Face CLIPModel for an OpenAI-named state dict.

    config: the model's CLIPConfig (heads, activation, eps, MLP widths, end-of-text
    rule); None reads it off the shapes the way OpenAI's build_model does.
    eos_token_id: 2 (HF's legacy rule: pool at each row's largest id, which is
    miniclip's rule for any vocabulary), or the config's own eos_token_id.
    hidden_act: miniclip's activation names are Hugging Face's.
    """
    c = config_from_state_dict(state) if config is None else config
    common = {"attention_dropout": 0.0, "hidden_act": c.activation, "initializer_factor": 1.0,
              "initializer_range": 0.02, "layer_norm_eps": c.layer_norm_eps, "projection_dim": c.embed_dim}
    text = dict(common, **{
        "bos_token_id": c.vocab_size - 2, "pad_token_id": 0,
        "eos_token_id": 2 if c.eos_token_id is None else c.eos_token_id,
        "hidden_size": c.transformer_width, "intermediate_size": c.transformer_mlp,
        "max_position_embeddings": c.context_length,
        "model_type": "clip_text_model", "num_attention_heads": c.transformer_heads,
        "num_hidden_layers": c.transformer_layers, "vocab_size": c.vocab_size})
    vision = dict(common, **{
        "hidden_size": c.vision_width, "image_size": c.image_resolution,
        "intermediate_size": c.vision_mlp, "model_type": "clip_vision_model",
        "num_attention_heads": c.num_vision_heads, "num_channels": 3,
        "num_hidden_layers": c.vision_layers, "patch_size": c.vision_patch_size})
    return {"architectures": ["CLIPModel"], "dtype": "float32", "initializer_factor": 1.0,
            "logit_scale_init_value": float(state["logit_scale"]), "model_type": "clip",
            "projection_dim": c.embed_dim, "text_config": text, "vision_config": vision}


# --------------------------------------------------------------------------
# Tokenizer and processor files
# --------------------------------------------------------------------------

def write_json(path, value):
    """`value` as indented, key-sorted UTF-8 JSON, written atomically."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_text(path, text):
    """`text` as UTF-8, written atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def write_hf_tokenizer(tokenizer, folder, context_length=77):
    """Write the files Hugging Face's CLIPTokenizer reads, from a miniclip Tokenizer.

    vocab.json   token string -> id (byte-level BPE symbols, `</w>` ends a word);
                 where two merges spell one string the later id wins, as in
                 Tokenizer.encoder (and OpenAI's dict), so encoding agrees
    merges.txt   "#version: 0.2" then one "left right" line per merge, in rank order
    tokenizer_config.json, special_tokens_map.json
                 OpenAI's special tokens, as in OpenAI's own Hugging Face folders:
                 bos <|startoftext|>, and <|endoftext|> for eos, pad and unk
                 (a plain symbol such as "!" as pad would become a special token:
                 HF would give a lone "!" another id than miniclip does);
                 model_max_length = the context length
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "vocab.json"), dict(sorted(tokenizer.encoder.items(), key=lambda kv: kv[1])))
    write_text(os.path.join(folder, "merges.txt"),
               "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in tokenizer.merges))
    special = {"bos_token": SOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT, "pad_token": EOT_TEXT}
    write_json(os.path.join(folder, "special_tokens_map.json"), special)
    write_json(os.path.join(folder, "tokenizer_config.json"), dict(
        special, tokenizer_class="CLIPTokenizer", model_max_length=context_length,
        do_lower_case=True, errors="replace", add_prefix_space=False))


def read_hf_tokenizer(path):
    """The miniclip Tokenizer of a Hugging Face folder's merges.txt, checked against its
    vocab.json; None when the folder has no merges.txt (then the model's tokenizer is
    OpenAI's or must be given). path: the folder, or a weights file inside it.

    miniclip numbers tokens from the merge list (bytes, bytes + </w>, one per merge,
    then <|startoftext|> and <|endoftext|>), as OpenAI and HF's CLIPTokenizer files
    do; a vocab.json numbered otherwise is refused naming the first token that differs.
    """
    folder = os.fspath(path) if os.path.isdir(path) else os.path.dirname(os.fspath(path))
    merges_path, vocab_path = os.path.join(folder, "merges.txt"), os.path.join(folder, "vocab.json")
    if not os.path.isfile(merges_path):
        return None
    try:
        tokenizer = Tokenizer.from_file(merges_path)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{merges_path}: not a merges file miniclip reads ({e})") from None
    if os.path.isfile(vocab_path):
        vocab = ConfigJSON.read(vocab_path).value
        if len(vocab) != len(tokenizer):
            raise CheckpointError(f"{vocab_path} holds {len(vocab)} tokens, but {merges_path} makes "
                                  f"{len(tokenizer)}: the two files do not belong together")
        for token, i in vocab.items():
            if tokenizer.encoder.get(token) != i:
                raise CheckpointError(
                    f"{vocab_path}: token {token!r} has id {i!r}, but {merges_path} gives it "
                    f"{tokenizer.encoder.get(token)!r}: miniclip's tokenizer numbers tokens as OpenAI's "
                    f"(bytes, merges, specials) and cannot follow this vocab.json")
    return tokenizer


def write_hf_preprocessor(folder, resolution, mean=None, std=None):
    """preprocessor_config.json for CLIPImageProcessor: miniclip's Preprocess
    (bicubic resize of the short side, centre crop, /255, mean/std)."""
    write_json(os.path.join(os.fspath(folder), "preprocessor_config.json"), {
        "crop_size": {"height": resolution, "width": resolution}, "do_center_crop": True,
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": list(MEAN if mean is None else mean), "image_std": list(STD if std is None else std),
        "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": resolution}})  # 3: bicubic


def tokenizer_for(vocab_size):
    """The tokenizer a model of this vocabulary was made with, when that is clear
    (OpenAI's for 49408 ids, miniclip's default when its size matches), else None."""
    if vocab_size == 49408:
        return Tokenizer.openai()
    default = Tokenizer.default()
    return default if len(default) == vocab_size else None


# --------------------------------------------------------------------------
# export_hf
# --------------------------------------------------------------------------

def export_hf(model_or_state_dict, folder, tokenizer=None):
    """Write a folder transformers' `CLIPModel.from_pretrained(folder)` and
    `CLIPProcessor.from_pretrained(folder)` load:

    model.safetensors (float32), config.json (the model's heads, activation,
    eps, MLP widths and an end-of-text rule that pools where miniclip pools),
    vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
    (from `tokenizer`) and preprocessor_config.json.

    model_or_state_dict: a miniclip CLIP (its .config is used) or an OpenAI-named
    {name: array} (config read off the shapes, OpenAI's conventions).
    tokenizer: a miniclip Tokenizer; None: OpenAI's for a 49408-id model,
    miniclip's default vocabulary when its size matches, else no tokenizer
    files (with a warning). Returns the folder.
    """
    state, config = model_or_state_dict, getattr(model_or_state_dict, "config", None)
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    state = {name: to_numpy(value) for name, value in state.items() if name not in OPENAI_EXTRA_KEYS}
    if any(name.startswith("visual.layer1.") for name in state):
        raise CheckpointError(
            "export_hf: this is a ResNet CLIP (ModifiedResNet image tower), and Hugging Face's "
            "CLIPModel has only the ViT tower: export a ViT model, or save this one with "
            "miniclip.checkpoint / as OpenAI-named safetensors (write_safetensors(path, model.state_dict()))")
    if "logit_bias" in state:
        raise CheckpointError(
            "export_hf: this is a SigLIP-trained CLIP (it has a logit_bias), and Hugging Face's "
            "CLIPModel has no logit bias: save it with miniclip.checkpoint, or as OpenAI-named "
            "safetensors (write_safetensors(path, model.state_dict())), which OpenCLIP's names match")
    state = {name: value.astype(np.float32) for name, value in state.items()}
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    config_json = hf_config(state, config)
    vocab_size = config_json["text_config"]["vocab_size"]
    if tokenizer is None:
        tokenizer = tokenizer_for(vocab_size)
        if tokenizer is None:
            warnings.warn(f"export_hf: no tokenizer files written: the model has {vocab_size} token ids, "
                          f"neither OpenAI's 49408 nor miniclip's default vocabulary; pass "
                          f"export_hf(model, folder, tokenizer=...)", UserWarning, stacklevel=2)
    elif len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids, more than the model's "
                         f"{vocab_size}: it is not this model's tokenizer")
    # transformers refuses safetensors files without format "pt" in the metadata
    write_safetensors(os.path.join(folder, "model.safetensors"), openai_to_hf(state), metadata={"format": "pt"})
    write_json(os.path.join(folder, "config.json"), config_json)
    context = config_json["text_config"]["max_position_embeddings"]
    if tokenizer is not None:
        write_hf_tokenizer(tokenizer, folder, context_length=context)
    write_hf_preprocessor(folder, config_json["vision_config"]["image_size"])
    return folder


