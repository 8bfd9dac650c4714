"""Pretrained CLIP weights without torch: read OpenAI's .pt files and Hugging
Face safetensors, and write a folder Hugging Face can load.

    model, preprocess = load("ViT-B/32")          # download (once), verify, build
    state = load_state_dict_any("ViT-B-32.pt")    # name -> ndarray, OpenAI names
    export_hf(model, "clip-hf/")                  # model.safetensors + config.json

Three file formats meet here:

1. PyTorch zip archives (`torch.save`, `torch.jit.save`). A zip holding
   `<top>/data.pkl`, a pickle that describes the object, and one raw
   little-endian byte file `<top>/data/<n>` per storage. Each tensor in the
   pickle is the call `torch._utils._rebuild_tensor_v2(storage, offset, size,
   stride, ...)`: a strided view into storage <n>. OpenAI's released files are
   TorchScript archives: the pickle is the module tree, one `__torch__.*`
   object per module, whose attributes are its parameters, buffers and
   submodules.

   A pickle can name any Python function and call it, so unpickling an
   untrusted file with the plain `pickle` module can run any code. Here a
   restricted Unpickler answers only the handful of names a tensor archive
   needs, with inert stand-ins of our own; any other name stops the load
   before anything is called. No code from the file is ever executed.

2. safetensors: an 8-byte little-endian header length, a JSON header
   {name: {dtype, shape, data_offsets}}, then the raw bytes. No code at all.

3. Hugging Face `CLIPModel` names: the same weights renamed, with the packed
   attention in-projection split into q/k/v and the two projections transposed.
"""
import collections
import json
import os
import pickle
import re
import zipfile
import zlib

import numpy as np
from numpy.lib.stride_tricks import as_strided

from miniclip.backend import to_numpy
from miniclip.checkpoint import atomic_write


class CheckpointError(ValueError):
    """A checkpoint file that cannot (or must not) be read."""


# --------------------------------------------------------------------------
# 1. PyTorch zip archives
# --------------------------------------------------------------------------

# torch storage class -> element dtype of its bytes (little-endian on disk).
# numpy has no bfloat16: its 16 bits are read as uint16 and widened later.
_STORAGE_DTYPES = {
    "HalfStorage": "<f2", "FloatStorage": "<f4", "DoubleStorage": "<f8",
    "BFloat16Storage": "<u2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}

# Keys OpenAI's TorchScript archives carry beside the weights (ints, not weights).
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")

# What `torch.save` (before torch 1.6) wrote first: pickle protocol 2, then
# the magic number 0x1950a86a20f9469cfc6c as a LONG1.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

# A storage named in the pickle, not read yet: (file key, storage class name, element count).
_StorageRef = collections.namedtuple("_StorageRef", "key storage_type numel")
# A tensor named in the pickle: a strided view into a storage, not read yet.
_TensorRef = collections.namedtuple("_TensorRef", "storage offset size stride")


class TorchScriptObject:
    """A `__torch__.*` object (a TorchScript module): its attributes, no code.

    BUILD fills `__dict__` from the pickled attribute dict (parameters,
    buffers, submodules, `training`, ...); `torch_class` is the class name.
    """
    torch_class = "__torch__"

    def __repr__(self):
        return f"<{self.torch_class}: {', '.join(vars(self))}>"


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Stand-in for torch's: remember the view; the bytes are read later."""
    if not isinstance(storage, _StorageRef):
        raise TypeError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """Stand-in for torch's: a Parameter is just its tensor here."""
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that knows only the globals a tensor archive needs.

    find_class is asked for every global the pickle names (GLOBAL,
    STACK_GLOBAL, EXT); what it returns is what REDUCE/NEWOBJ may call. So
    the file can only ever call the functions below, never its own choice.
    """

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path
        self.script_classes = {}  # "__torch__.x.Y" -> its TorchScriptObject subclass

    def find_class(self, module, name):
        qualname = f"{module}.{name}"
        if qualname == "collections.OrderedDict":
            return collections.OrderedDict
        if qualname == "torch._utils._rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if qualname == "torch._utils._rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # a plain string: persistent_load looks up its dtype
        if module == "__torch__" or module.startswith("__torch__."):
            if qualname not in self.script_classes:  # NEWOBJ needs a class
                self.script_classes[qualname] = type(name, (TorchScriptObject,), {"torch_class": qualname})
            return self.script_classes[qualname]
        raise CheckpointError(
            f"refused to load global '{qualname}' from {self.path}: a checkpoint of "
            f"weights needs only tensors, and this name could run code. If you trust "
            f"the file, save just its weights with torch (`torch.save(state_dict, "
            f"'weights.pt')`) or as .safetensors, and load that")

    def persistent_load(self, pid):
        """('storage', storage class, key, location, numel) -> a _StorageRef."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and pid[1] in _STORAGE_DTYPES):
            raise CheckpointError(f"{self.path}: unknown persistent id {pid!r} in data.pkl")
        _, storage_type, key, _location, numel = pid
        return _StorageRef(str(key), storage_type, int(numel))


def read_torch_checkpoint(path):
    """Read a PyTorch zip checkpoint into {name: ndarray}, without torch.

    Accepts `torch.save(state_dict)` files and TorchScript archives such as
    OpenAI's released CLIP .pt files (whose state dict this returns, with the
    names `torch.jit.load(f).state_dict()` gives). Arrays keep the stored
    dtype (float16 stays float16; bfloat16 becomes float32) and are
    contiguous copies in native byte order.
    """
    path = os.fspath(path)
    _check_is_zip(path)
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive, path)
            big_endian = _read_optional(archive, prefix + "byteorder") == b"big"
            with archive.open(prefix + "data.pkl") as f:
                root = _unpickle(f, path)
            refs = _tensor_refs(root, path)
            return _read_tensors(archive, prefix, refs, big_endian, path)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise CheckpointError(
            f"{path} is damaged ({e}): delete it and download or save it again") from e


def _check_is_zip(path):
    """A clear error for the files that are not a PyTorch zip archive."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if head == _LEGACY_TORCH_MAGIC:
        raise CheckpointError(
            f"{path} is a legacy (pre-1.6) torch.save file, which miniclip does not "
            f"read: re-save it with a current torch, `torch.save(torch.load(f), 'new.pt')`")
    if head.startswith(b"PK\x03\x04"):
        raise CheckpointError(
            f"{path} starts like a zip archive but its end is missing (truncated, "
            f"e.g. an interrupted download): delete it and download it again")
    raise CheckpointError(
        f"{path} is not a PyTorch checkpoint (a zip archive holding data.pkl); "
        f"for other formats use a .safetensors file, a Hugging Face folder or a miniclip .npz")


def _archive_prefix(archive, path):
    """'top/' for the entry 'top/data.pkl' (the top folder name varies)."""
    found = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    if not found:
        raise CheckpointError(f"{path} is a zip archive but holds no data.pkl: not a PyTorch checkpoint")
    shallowest = min(found, key=lambda n: n.count("/"))
    return shallowest[: -len("data.pkl")]


def _read_optional(archive, name):
    try:
        return archive.read(name).strip()
    except KeyError:
        return None


def _unpickle(file, path):
    try:
        return _RestrictedUnpickler(file, path).load()
    except CheckpointError:
        raise
    except Exception as e:  # a malformed pickle fails in many ways; name the file
        raise CheckpointError(f"{path}: cannot read data.pkl ({type(e).__name__}: {e})") from e


def _tensor_refs(root, path):
    """The pickled object -> {state-dict name: _TensorRef}."""
    if isinstance(root, TorchScriptObject):
        return _script_module_tensors(root, "")
    if isinstance(root, dict) and isinstance(root.get("state_dict"), dict):
        root = root["state_dict"]  # a training checkpoint: {"epoch": ..., "state_dict": {...}}
    if not isinstance(root, dict):
        raise CheckpointError(f"{path} holds a {type(root).__name__}, not a state dict or TorchScript module")
    for name, value in root.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
    return dict(root)


def _script_module_tensors(module, prefix):
    """Parameters and buffers of a TorchScript module tree, named like
    `torch.jit.load(f).state_dict()`: a module's own tensors, then each
    submodule's under 'submodule.' (recursively)."""
    tensors, children = {}, []
    for name, value in vars(module).items():
        if isinstance(value, _TensorRef):
            tensors[prefix + name] = value
        elif isinstance(value, TorchScriptObject):
            children.append((name, value))
    for name, child in children:
        tensors.update(_script_module_tensors(child, prefix + name + "."))
    return tensors


def _read_tensors(archive, prefix, refs, big_endian, path):
    """Read each storage once and cut its tensors out of it.

    Peak memory: the finished arrays plus one storage's raw bytes.
    """
    by_storage = collections.defaultdict(list)
    for name, ref in refs.items():
        by_storage[ref.storage].append(name)
    arrays = {}
    for storage_ref, names in by_storage.items():
        storage = _read_storage(archive, prefix, storage_ref, big_endian, path)
        for name in names:
            arrays[name] = _cut_tensor(storage, refs[name], name, path)
    return {name: arrays[name] for name in refs}  # the archive's order


def _read_storage(archive, prefix, ref, big_endian, path):
    """Storage <key> as a 1-D read-only array of `numel` elements."""
    dtype = np.dtype(_STORAGE_DTYPES[ref.storage_type])
    if big_endian:
        dtype = dtype.newbyteorder(">")
    entry = f"{prefix}data/{ref.key}"
    try:
        raw = archive.read(entry)
    except KeyError:
        raise CheckpointError(
            f"{path}: data.pkl uses storage {ref.key!r} but the archive has no entry "
            f"{entry!r}; the file is incomplete: download or save it again") from None
    if len(raw) < ref.numel * dtype.itemsize:
        raise CheckpointError(
            f"{path}: storage {entry!r} holds {len(raw)} bytes, but {ref.numel} "
            f"{ref.storage_type} elements need {ref.numel * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype, count=ref.numel)


def _cut_tensor(storage, ref, name, path):
    """The strided view (offset, size, stride) of `storage`, as a contiguous copy.

    Element [i0, i1, ...] of the tensor is storage[offset + i0*stride0 + i1*stride1 + ...].
    The bounds are checked first: as_strided itself would read past the end.
    """
    offset, size, stride = ref.offset, ref.size, ref.stride
    numbers = (offset,) + size + stride
    if len(size) != len(stride) or not all(isinstance(n, int) and n >= 0 for n in numbers):
        raise CheckpointError(f"{path}: tensor {name!r} has an invalid layout {size} / {stride} / {offset}")
    if 0 in size:
        view = np.empty(size, dtype=storage.dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))  # index of the last element
        if last >= storage.size:
            raise CheckpointError(
                f"{path}: tensor {name!r} (size {size}, stride {stride}, offset {offset}) "
                f"reaches element {last} of a storage of {storage.size}: the file is damaged")
        itemsize = storage.dtype.itemsize
        view = as_strided(storage[offset:], shape=size, strides=[s * itemsize for s in stride])
    array = view.astype(storage.dtype.newbyteorder("="), order="C")  # a copy, native byte order
    if ref.storage.storage_type == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)  # bfloat16 = the top 16 bits of a float32
    return array


# --------------------------------------------------------------------------
# 2. safetensors
# --------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_SAFETENSORS_CODES = {  # numpy dtype name -> safetensors code (for writing)
    "float16": "F16", "float32": "F32", "float64": "F64",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}


def read_safetensors(path):
    """Read a .safetensors file into {name: ndarray} (BF16 becomes float32).

    Layout: u64 little-endian N | N bytes of JSON header | data. The header maps
    each name to {"dtype", "shape", "data_offsets": [begin, end]} (byte offsets
    into the data part); an optional "__metadata__" holds strings.
    """
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        if file_size < 8 or header_size > file_size - 8:
            raise CheckpointError(
                f"{path} is not a complete safetensors file (header of {header_size} "
                f"bytes, file of {file_size}): truncated, or another format")
        try:
            header = json.loads(f.read(header_size))
        except ValueError as e:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e})") from e
        data_start = 8 + header_size
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _SAFETENSORS_DTYPES:
                raise CheckpointError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which miniclip cannot read")
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(info["shape"])
            begin, end = info["data_offsets"]
            count = int(np.prod(shape))
            if end - begin != count * dtype.itemsize or data_start + end > file_size:
                raise CheckpointError(
                    f"{path}: tensor {name!r} {info['dtype']}{list(shape)} needs bytes "
                    f"[{begin}, {end}) of a data part of {file_size - data_start}: truncated or damaged")
            array = np.empty(count, dtype=dtype)
            f.seek(data_start + begin)
            f.readinto(array.view(np.uint8))  # straight from the file into the array
            array = array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)
            if info["dtype"] == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = array
    return tensors


def write_safetensors(path, tensors, metadata=None):
    """Write {name: array} as a .safetensors file (atomically: a temporary
    file renamed over `path`, so a crash never leaves half a file).

    Names are sorted; the JSON header is padded with spaces to a multiple of
    8 bytes, as the reference writer does, so every tensor starts aligned.
    `metadata`: {str: str}, stored under "__metadata__".
    """
    path = os.fspath(path)
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}} if metadata else {}
    arrays, offset = [], 0
    for name in sorted(tensors):
        array = np.asarray(to_numpy(tensors[name]), order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        if array.dtype.name not in _SAFETENSORS_CODES:
            raise CheckpointError(f"cannot write {name!r}: safetensors has no dtype for {array.dtype}")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": _SAFETENSORS_CODES[array.dtype.name], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # pad: 8 + len(blob) is a multiple of 8

    def write(f):
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for array in arrays:
            f.write(array.tobytes())

    atomic_write(path, write)


# --------------------------------------------------------------------------
# 3. Hugging Face CLIPModel names
# --------------------------------------------------------------------------

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

    `hf_config`: the parsed config.json; when given, it is checked for what the
    OpenAI architecture assumes (QuickGELU, LayerNorm eps 1e-5, heads = width // 64).
    """
    if hf_config is not None:
        _check_hf_config(hf_config)
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


def _check_hf_config(config):
    for tower in ("text_config", "vision_config"):
        sub = config.get(tower, {})
        act = sub.get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise CheckpointError(
                f"{tower}.hidden_act is {act!r}: miniclip's blocks use QuickGELU like OpenAI's "
                f"CLIP, so this model would compute something else")
        eps = sub.get("layer_norm_eps", 1e-5)
        if eps != 1e-5:
            raise CheckpointError(f"{tower}.layer_norm_eps is {eps}: miniclip's LayerNorm uses 1e-5 like OpenAI's CLIP")
        if "hidden_size" in sub and "num_attention_heads" in sub:
            width, heads = sub["hidden_size"], sub["num_attention_heads"]
            if heads != width // 64:
                raise CheckpointError(
                    f"{tower} has {heads} attention heads for width {width}: miniclip, like "
                    f"OpenAI's build_model, uses width // 64 = {width // 64} heads")


def hf_config(state):
    """The config.json of a Hugging Face CLIPModel for an OpenAI-named state
    dict, read off the shapes the way OpenAI's build_model does."""
    def layers(prefix):
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    conv = state["visual.conv1.weight"]                       # (W, 3, P, P)
    vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)  # (R/P)^2 + 1 rows
    text_width = int(state["ln_final.weight"].shape[0])
    vocab = int(state["token_embedding.weight"].shape[0])
    embed_dim = int(state["text_projection"].shape[1])
    common = {"attention_dropout": 0.0, "hidden_act": "quick_gelu", "initializer_factor": 1.0,
              "initializer_range": 0.02, "layer_norm_eps": 1e-05, "projection_dim": embed_dim}
    text = dict(common, **{
        "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": 0,  # <|startoftext|>, <|endoftext|>
        "hidden_size": text_width,
        "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "max_position_embeddings": int(state["positional_embedding"].shape[0]),
        "model_type": "clip_text_model", "num_attention_heads": text_width // 64,
        "num_hidden_layers": layers("transformer.resblocks."), "vocab_size": vocab})
    vision = dict(common, **{
        "hidden_size": vision_width, "image_size": patch * grid,
        "intermediate_size": int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "model_type": "clip_vision_model", "num_attention_heads": vision_width // 64, "num_channels": 3,
        "num_hidden_layers": layers("visual.transformer.resblocks."), "patch_size": patch})
    return {"architectures": ["CLIPModel"], "dtype": "float32", "initializer_factor": 1.0,
            "logit_scale_init_value": float(state["logit_scale"]), "model_type": "clip",
            "projection_dim": embed_dim, "text_config": text, "vision_config": vision}


def export_hf(model_or_state_dict, folder):
    """Write `folder/model.safetensors` + `folder/config.json` (float32) that
    transformers' `CLIPModel.from_pretrained(folder)` loads.

    model_or_state_dict: a miniclip CLIP (anything with .state_dict()) or an
    OpenAI-named {name: array}. Returns the folder.
    """
    state = model_or_state_dict
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    state = {name: to_numpy(value) for name, value in state.items() if name not in OPENAI_EXTRA_KEYS}
    state = {name: value.astype(np.float32) for name, value in state.items()}
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    # transformers refuses safetensors files without format "pt" in the metadata
    write_safetensors(os.path.join(folder, "model.safetensors"), openai_to_hf(state), metadata={"format": "pt"})
    config_path = os.path.join(folder, "config.json")
    text = json.dumps(hf_config(state), indent=2, sort_keys=True) + "\n"
    atomic_write(config_path, lambda f: f.write(text.encode("utf-8")))
    return folder


# --------------------------------------------------------------------------
# 4. One entry point for any checkpoint, and load()
# --------------------------------------------------------------------------

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
    """The OpenAI model names load() accepts (the ViT ones; miniclip has no ResNet tower)."""
    return [name for name in _MODELS if name.startswith("ViT")]


def load_state_dict_any(path):
    """{name: ndarray} with OpenAI names, from whatever `path` is:

    - a PyTorch .pt/.bin zip (state dict or TorchScript archive);
    - a .safetensors file, or a folder holding model.safetensors;
    - a miniclip checkpoint .npz (its `param/<name>` arrays).
    Hugging Face names (text_model.*, vision_model.*) are mapped to OpenAI's,
    checked against the config.json beside the weights when there is one.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        weights = os.path.join(path, "model.safetensors")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{path} is a folder without model.safetensors (a Hugging Face model folder has one)")
        path = weights
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.endswith(".safetensors"):
        state = read_safetensors(path)
    elif path.endswith(".npz"):
        try:  # only the param/* arrays are read (a checkpoint also holds optimiser state)
            with np.load(path, allow_pickle=False) as archive:
                state = {key[len("param/"):]: archive[key] for key in archive.files if key.startswith("param/")}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{path} is not a readable .npz file ({e}): truncated or damaged") from e
        if not state:
            raise CheckpointError(f"{path} holds no param/<name> arrays: not a miniclip checkpoint")
    else:
        state = read_torch_checkpoint(path)
    if any(name.startswith(("text_model.", "vision_model.")) for name in state):
        config_path = os.path.join(os.path.dirname(path), "config.json")
        config = None
        if os.path.isfile(config_path):
            with open(config_path) as f:
                config = json.load(f)
        state = hf_to_openai(state, config)
    return state


def _checkpoint_path(name_or_path):
    """An OpenAI model name -> its local file (assets folder, cache, else
    downloaded and sha256-checked); an existing path -> itself."""
    if name_or_path in _MODELS:
        if name_or_path.startswith("RN"):
            raise ValueError(
                f"{name_or_path} is one of OpenAI's ResNet CLIP models: not supported: miniclip "
                f"implements the ViT towers. Use one of {available_models()}")
        from miniclip.download import cache_dir, download, find_asset
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
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a model name ({', '.join(available_models())}) nor an "
        f"existing file or folder")


def load(name_or_path, device=None, dtype=None):
    """Like OpenAI's clip.load: -> (model, preprocess).

    name_or_path: an OpenAI name from available_models() (downloaded once into
    the cache; MINICLIP_ASSETS is looked in first) or a path that
    load_state_dict_any reads. Weights become float32 unless `dtype` is given
    (OpenAI's fp16 weights too). device: 'cpu' or 'cuda' (default: MINICLIP_DEVICE).
    The model is in eval mode; preprocess(PIL image) -> (3, R, R) float32.
    """
    path = _checkpoint_path(name_or_path)
    from miniclip.backend import default_device
    from miniclip.data.transforms import Preprocess
    from miniclip.model import CLIP
    if str(path).endswith(".npz"):      # a miniclip run: its saved config, not inferred heads
        from miniclip.checkpoint import model_from_checkpoint
        model = model_from_checkpoint(path, device)[0].astype(dtype or np.float32)
        return model, Preprocess(model.config.image_resolution)
    state = load_state_dict_any(path)
    model = CLIP.from_state_dict(state, dtype=np.float32 if dtype is None else dtype)
    model.to(device or default_device())
    model.eval()
    return model, Preprocess(model.config.image_resolution)
