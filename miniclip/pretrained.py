"""Pretrained CLIP weights without torch: load() and available_models(), the
dispatch over the file formats in miniclip/formats.

    model, preprocess = load("ViT-B/32")          # download (once), verify, build
    state = load_state_dict_any("ViT-B-32.pt")    # name -> ndarray, OpenAI names
    export_hf(model, "clip-hf/")                  # model.safetensors + config.json (formats/huggingface.py)

What a path may be, and which module reads it:
    .pt / .bin (torch.save, TorchScript)   formats/torch_archive.py (restricted unpickler)
    .safetensors                           formats/safetensors.py
    a Hugging Face folder (config.json)    formats/huggingface.py
    an OpenCLIP folder                     formats/openclip.py
    a miniclip .npz checkpoint             checkpoint.py (its declared sizes: formats/npz.py)
Every weights file then passes formats/checks.py: no NaN or Inf, no structure
miniclip does not compute, and a config whose model is exactly the weights present.
"""
import collections
import os
import warnings
import zipfile

import numpy as np

from miniclip.backend import default_device
from miniclip.checkpoint import load_checkpoint, model_from_checkpoint
from miniclip.config import OPENCLIP_CONFIGS, get_config
from miniclip.data.transforms import Preprocess
from miniclip.download import cache_dir, download, find_asset
from miniclip.formats.checks import (CheckpointError, check_config_fits_state, check_finite, check_supported,
                                     config_parameter_count, inferred_config)
from miniclip.formats.config_json import ConfigJSON
from miniclip.formats.huggingface import (config_from_hf, export_hf, hf_to_openai, openai_to_hf,
                                          read_hf_config, read_hf_tokenizer, write_hf_tokenizer)
from miniclip.formats.npz import npz_param_shapes
from miniclip.formats.openclip import read_open_clip_config
from miniclip.formats.safetensors import read_safetensors, write_safetensors
from miniclip.formats.torch_archive import read_torch_checkpoint, save_torch_state_dict
from miniclip.model import CLIP

# Names users, lessons and tests import from here (the readers and writers live in miniclip/formats).
__all__ = ["load", "available_models", "read_checkpoint", "load_state_dict_any", "Checkpoint",
           "CheckpointError", "export_hf", "save_torch_state_dict", "read_torch_checkpoint",
           "read_safetensors", "write_safetensors", "hf_to_openai", "openai_to_hf", "config_from_hf",
           "read_hf_tokenizer", "write_hf_tokenizer", "check_supported", "config_parameter_count"]


# openai/CLIP's clip.py: name -> URL; the folder before the file name is its sha256.
_MODELS = {
    "RN50": "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "https://openaipublic.azureedge.net/clip/models/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "https://openaipublic.azureedge.net/clip/models/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "https://openaipublic.azureedge.net/clip/models/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "https://openaipublic.azureedge.net/clip/models/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}


def available_models():
    """The OpenAI model names load() accepts: the five ResNets and the four ViTs (OpenAI's order)."""
    return list(_MODELS)


# What a model folder may hold, in the order looked for. OpenCLIP's published
# folders name their weights open_clip_*; Hugging Face's may be sharded.
FOLDER_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                  "pytorch_model.bin.index.json", "open_clip_model.safetensors",
                  "open_clip_pytorch_model.bin")


def read_weights_file(path):
    """One file -> {name: ndarray}, as stored (no renaming)."""
    if path.endswith(".index.json"):
        return read_sharded(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith(".npz"):
        try:  # a miniclip checkpoint: only its weights (it also holds optimiser state)
            return load_checkpoint(path, optimiser=False)["params"]
        except ValueError as e:
            raise CheckpointError(str(e)) from e
    return read_torch_checkpoint(path)


def read_sharded(index_path):
    """A Hugging Face shard index {"weight_map": {name: shard file}} -> all the shards' tensors."""
    weight_map = ConfigJSON.read(index_path).section("weight_map").value
    if not weight_map or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise CheckpointError(f"{index_path} is not a shard index: its weight_map must map each "
                              f"tensor name to a shard file name")
    folder, state = os.path.dirname(index_path), {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if os.path.basename(shard) != shard or not os.path.isfile(shard_path):
            raise CheckpointError(f"{index_path} names the shard {shard!r}, which is not a file in {folder}")
        tensors = read_weights_file(shard_path)
        for name, value in tensors.items():
            if weight_map.get(name) == shard:
                state[name] = value
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index_path}: {len(missing)} tensors of the weight_map are not in their "
                              f"shards, e.g. {missing[0]!r}: a shard is incomplete")
    return state


def is_torchscript(path):
    """A TorchScript archive (torch.jit.save, OpenAI's released .pt files) holds code/."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in "/" + name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_checkpoint(path):
    """Whatever `path` is -> Checkpoint(state with OpenAI names, config or None, kind, preprocess kwargs).

    kind: "torchscript" (OpenAI's archives: OpenAI's architecture by construction),
    "miniclip" (an .npz of a training run), "huggingface" (HF names; config from
    config.json beside them when there is one), "open_clip" (a folder with
    open_clip_config.json), "state_dict" (weights alone). config is a CLIPConfig
    when the files say enough, else None. A weight holding NaN or Inf is refused.
    """
    path = os.fspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.isdir(path):
        found = [name for name in FOLDER_WEIGHTS if os.path.isfile(os.path.join(path, name))]
        if not found:
            raise FileNotFoundError(
                f"{path} is a folder without model weights: looked for {', '.join(FOLDER_WEIGHTS)}")
        path = os.path.join(path, found[0])
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = read_weights_file(path)
    check_finite(state, path)
    if state and all(name.startswith("module.") for name in state):
        state = {name[len("module."):]: value for name, value in state.items()}   # saved from DistributedDataParallel
    kind, config, preprocess = "state_dict", None, {}
    if path.endswith(".npz"):
        kind = "miniclip"
    elif not path.endswith((".safetensors", ".json")) and is_torchscript(path):
        kind = "torchscript"
    if any(name.startswith(("text_model.", "vision_model.")) for name in state):
        kind = "huggingface"
        config_path = os.path.join(folder, "config.json")
        state = hf_to_openai(state)
        if os.path.isfile(config_path):
            check_supported(state, path)
            config = read_hf_config(config_path, state)
    open_clip_path = os.path.join(folder, "open_clip_config.json")
    if kind == "state_dict" and os.path.isfile(open_clip_path):
        kind = "open_clip"
        config, preprocess = read_open_clip_config(open_clip_path)
    return Checkpoint(state, config, kind, preprocess)


Checkpoint = collections.namedtuple("Checkpoint", "state config kind preprocess")


def load_state_dict_any(path):
    """{name: ndarray} with OpenAI names, from whatever `path` is:

    - a PyTorch .pt/.bin zip (state dict or TorchScript archive);
    - a .safetensors file;
    - a folder: Hugging Face's (model.safetensors, its sharded index
      model.safetensors.index.json, pytorch_model.bin or its index) or
      OpenCLIP's (open_clip_model.safetensors / open_clip_pytorch_model.bin);
    - a miniclip checkpoint .npz (its `param/<name>` arrays).
    Hugging Face names (text_model.*, vision_model.*) are mapped to OpenAI's,
    checked against the config.json beside the weights when there is one.
    """
    return read_checkpoint(path).state


def _checkpoint_path(name_or_path):
    """An OpenAI model name -> its local file (assets folder, cache, else
    downloaded and sha256-checked); an existing path -> itself."""
    if name_or_path in _MODELS:
        url = _MODELS[name_or_path]
        filename = url.rsplit("/", 1)[1]
        sha256 = url.split("/")[-2]
        found = find_asset(filename)
        if found:
            return found
        destination = os.path.join(cache_dir(), filename)
        if not os.path.isfile(destination):
            download(url, destination, sha256=sha256)
        return destination
    if os.path.exists(name_or_path):
        return name_or_path
    if name_or_path in OPENCLIP_CONFIGS:
        raise FileNotFoundError(
            f"{name_or_path!r} is an OpenCLIP architecture name, not weights miniclip can download: "
            f"pass the weights' path and the architecture, load('weights.safetensors', config={name_or_path!r})")
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a model name ({', '.join(available_models())}) nor an "
        f"existing file or folder")


def load(name_or_path, device=None, dtype=None, config=None):
    """Like OpenAI's clip.load: -> (model, preprocess).

    name_or_path: an OpenAI name from available_models() (downloaded once into
    the cache; MINICLIP_ASSETS is looked in first) or a path that
    read_checkpoint reads (file or Hugging Face / OpenCLIP folder).
    config: a CLIPConfig, or a name: OpenAI's ('ViT-B/32'), OpenCLIP's
    architecture names ('ViT-B-32' (exact GELU), 'ViT-B-32-quickgelu', 'ViT-H-14',
    ...; see miniclip.config.OPENCLIP_CONFIGS). None: the folder's config
    (Hugging Face config.json, OpenCLIP open_clip_config.json), OpenAI's for a
    TorchScript archive; for weights alone OpenAI's conventions, with a warning.
    Weights become float32 unless `dtype` is given (OpenAI's fp16 weights too).
    device: 'cpu' or 'cuda' (default: MINICLIP_DEVICE). The model is in eval
    mode; preprocess(PIL image) -> (3, R, R) float32.
    Before any model is built, the file's declared sizes must match the config
    (a small file never builds a huge model) and no weight may be NaN or Inf.
    """
    if isinstance(config, str):
        config = get_config(config)
    path = _checkpoint_path(name_or_path)
    if str(path).endswith(".npz"):
        if config is None:          # a miniclip run: its saved config, not inferred heads
            model = model_from_checkpoint(path, device)[0].astype(dtype or np.float32)
            return model, Preprocess(model.config.image_resolution)
        check_config_fits_state(config, npz_param_shapes(path), path)     # declared sizes, nothing read yet
    checkpoint = read_checkpoint(path)
    state = checkpoint.state
    given = config is not None
    if config is None:
        config = checkpoint.config
    if not given:   # a config the user names is checked key by key as the weights load
        check_config_fits_state(config if config is not None else inferred_config(state, path), state, path)
    check_supported(state, path)
    if config is None and checkpoint.kind not in ("torchscript", "miniclip"):
        warnings.warn(
            f"{name_or_path}: these weights come without a config, so miniclip assumes OpenAI's "
            f"conventions: QuickGELU activation, 64-wide attention heads (heads = width // 64), "
            f"LayerNorm eps 1e-5, pooling at each text's largest id. A model trained otherwise (e.g. "
            f"OpenCLIP's 'ViT-B-32' uses exact GELU; 'ViT-H-14' 80-wide heads) computes something "
            f"else: pass load(..., config='ViT-B-32') or a CLIPConfig", UserWarning, stacklevel=2)
    model = CLIP.from_state_dict(state, dtype=np.float32 if dtype is None else dtype, config=config)
    model.to(device or default_device())
    model.eval()
    return model, Preprocess(model.config.image_resolution, **checkpoint.preprocess)
