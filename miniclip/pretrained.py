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
import io
import json
import math
import os
import pickle
import re
import zipfile
import zlib

import numpy as np
from numpy.lib.stride_tricks import as_strided

from miniclip.backend import to_numpy
from miniclip.checkpoint import atomic_write, load_checkpoint
from miniclip.model import OPENAI_EXTRA_KEYS


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
        return _script_module_tensors(root, "", path)
    if isinstance(root, dict) and isinstance(root.get("state_dict"), dict):
        root = root["state_dict"]  # a training checkpoint: {"epoch": ..., "state_dict": {...}}
    if not isinstance(root, dict):
        raise CheckpointError(f"{path} holds a {type(root).__name__}, not a state dict or TorchScript module")
    for name, value in root.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
    return dict(root)


# A real CLIP module tree is ~6 levels deep; a deeper one is a crafted file.
MAX_MODULE_DEPTH = 64


def _script_module_tensors(root, prefix="", path="<checkpoint>"):
    """Parameters and buffers of a TorchScript module tree, named like
    `torch.jit.load(f).state_dict()`: a module's own tensors, then each
    submodule's under 'submodule.' (depth first).

    Each module object is visited once (a memo of ids): a module shared by
    two parents is named under the first path only, and a module that holds
    itself ends the walk instead of recursing forever. Deeper than
    MAX_MODULE_DEPTH levels -> CheckpointError.
    """
    tensors, seen = {}, set()
    stack = [(root, prefix, 0)]
    while stack:
        module, name_prefix, depth = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        if depth > MAX_MODULE_DEPTH:
            raise CheckpointError(
                f"{path}: its module tree is more than {MAX_MODULE_DEPTH} levels deep; a CLIP "
                f"model has about 6: the file is damaged or crafted")
        children = []
        for name, value in vars(module).items():
            if isinstance(value, _TensorRef):
                tensors[name_prefix + name] = value
            elif isinstance(value, TorchScriptObject):
                children.append((value, name_prefix + name + ".", depth + 1))
        stack.extend(reversed(children))  # the first child is walked next
    return tensors


def _read_tensors(archive, prefix, refs, big_endian, path):
    """Read each storage once and cut its tensors out of it.

    Every layout is checked against its storage before any byte is read
    (check_tensor_layouts), and each storage against its zip entry
    (_read_storage), so a small file cannot make this allocate more than it holds.
    Peak memory: the finished arrays plus one storage's raw bytes.
    """
    check_tensor_layouts(refs, path)
    by_storage = collections.defaultdict(list)
    for name, ref in refs.items():
        by_storage[ref.storage].append(name)
    arrays = {}
    for storage_ref, names in by_storage.items():
        used = max(_elements_used(refs[name]) for name in names)
        storage = _read_storage(archive, prefix, storage_ref, big_endian, path, used)
        for name in names:
            arrays[name] = _cut_tensor(storage, refs[name], name, path)
    return {name: arrays[name] for name in refs}  # the archive's order


def _elements_used(ref):
    """How many leading elements of its storage a (checked) tensor view reaches."""
    if 0 in ref.size:
        return 0
    return ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) + 1


def check_tensor_layouts(refs, path):
    """Refuse a tensor whose view does not fit its storage, before anything is read.

    Sizes, strides and the offset are non-negative ints; the last element
    offset + sum((n - 1) * stride) lies inside the storage; and the tensor has
    no more elements than its storage (a stride-0 view would otherwise
    expand a few bytes into gigabytes when copied).
    """
    for name, ref in refs.items():
        offset, size, stride = ref.offset, ref.size, ref.stride
        numbers = (offset,) + size + stride
        if len(size) != len(stride) or not all(type(n) is int and n >= 0 for n in numbers):
            raise CheckpointError(f"{path}: tensor {name!r} has an invalid layout {size} / {stride} / {offset}")
        numel = math.prod(size)
        if numel == 0:
            continue
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= ref.storage.numel:
            raise CheckpointError(
                f"{path}: tensor {name!r} (size {size}, stride {stride}, offset {offset}) "
                f"reaches element {last} of a storage of {ref.storage.numel}: the file is damaged")
        if numel > ref.storage.numel:
            raise CheckpointError(
                f"{path}: tensor {name!r} (size {size}, stride {stride}) has {numel} elements, "
                f"more than its storage of {ref.storage.numel} holds (a stride-0 view): a "
                f"checkpoint of weights never has one; the file is damaged or crafted")


def _read_storage(archive, prefix, ref, big_endian, path, used=None):
    """Storage <key> as a 1-D read-only array of its first `used` elements (default: all).

    The storage's declared bytes are checked against the zip entry's declared
    size before reading, and only the bytes its tensors use are read, so a
    zip bomb (a small compressed entry declaring gigabytes) costs nothing.
    """
    dtype = np.dtype(_STORAGE_DTYPES[ref.storage_type])
    if big_endian:
        dtype = dtype.newbyteorder(">")
    entry = f"{prefix}data/{ref.key}"
    try:
        info = archive.getinfo(entry)
    except KeyError:
        raise CheckpointError(
            f"{path}: data.pkl uses storage {ref.key!r} but the archive has no entry "
            f"{entry!r}; the file is incomplete: download or save it again") from None
    if info.file_size < ref.numel * dtype.itemsize:
        raise CheckpointError(
            f"{path}: storage {entry!r} holds {info.file_size} bytes, but {ref.numel} "
            f"{ref.storage_type} elements need {ref.numel * dtype.itemsize}")
    count = ref.numel if used is None else used
    needed = count * dtype.itemsize
    with archive.open(entry) as f:
        raw = f.read(needed)
        if needed == info.file_size:
            f.read(1)  # reach the end of the entry: zipfile checks its CRC there
    if len(raw) < needed:
        raise CheckpointError(f"{path}: storage {entry!r} ends after {len(raw)} of {needed} bytes: the file is damaged")
    return np.frombuffer(raw, dtype=dtype, count=count)


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


# Writing the same format: a way out to PyTorch ----------------------------

class _TorchName:
    """A global the pickle names (torch._utils._rebuild_tensor_v2, torch.FloatStorage)
    without importing torch: the pickler below writes it as GLOBAL 'module name'."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):            # pickle calls it only when reading, with torch
        raise TypeError(f"{self.module}.{self.name} is a name for torch, not a function here")


_REBUILD_TENSOR_V2 = _TorchName("torch._utils", "_rebuild_tensor_v2")
_STORAGE_NAMES = {np.dtype(code).newbyteorder("="): _TorchName("torch", name)
                  for name, code in _STORAGE_DTYPES.items() if name != "BFloat16Storage"}


class _Storage:
    """One tensor's bytes, written as archive/data/<key>; pickled as a persistent id."""

    def __init__(self, key, array):
        self.key, self.array = key, array


class _TensorToSave:
    """Pickles as torch's own tensors do:
    _rebuild_tensor_v2(storage, offset 0, size, stride, requires_grad False, OrderedDict())."""

    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        shape = self.storage.array.shape
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))   # C order, in elements
        return (_REBUILD_TENSOR_V2, (self.storage, 0, shape, stride, False, collections.OrderedDict()))


class _TorchPickler(pickle._Pickler):
    """The plain (pure-Python) pickler, taught two things: a _TorchName is a GLOBAL,
    a _Storage is the persistent id ('storage', <storage class>, key, 'cpu', numel)."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_torch_name(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[_TorchName] = save_torch_name

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _STORAGE_NAMES[obj.array.dtype], obj.key, "cpu", obj.array.size)
        return None


def _aligned_writestr(archive, name, data, alignment=64):
    """Add a stored (uncompressed) entry whose bytes start at a multiple of `alignment`,
    padded with an 'FB' extra field as torch's writer does (torch.load can mmap them)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    zip64_extra = 20 if len(data) * 1.05 > zipfile.ZIP64_LIMIT else 0   # what zipfile adds
    start = archive.fp.tell() + 30 + len(name.encode("utf-8")) + 4 + zip64_extra
    padding = -start % alignment
    info.extra = b"FB" + padding.to_bytes(2, "little") + b"Z" * padding
    archive.writestr(info, data)


def save_torch_state_dict(model_or_state_dict, path):
    """Write a PyTorch state dict file (`torch.save` format) without torch.

    The zip archive holds archive/data.pkl (an OrderedDict of tensors, each pickled as
    torch._utils._rebuild_tensor_v2 of a storage) and one little-endian byte file per
    tensor. `torch.load(path, weights_only=True)` reads it, and its OpenAI names are
    what OpenAI's `clip.model.build_model(state_dict)` and OpenCLIP's loaders take,
    so a run can continue in PyTorch. miniclip.load() reads it back too.

    model_or_state_dict: a miniclip CLIP or an OpenAI-named {name: array}. Returns path.
    """
    state = model_or_state_dict
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    tensors = collections.OrderedDict()
    for i, (name, value) in enumerate(state.items()):
        array = np.array(to_numpy(value), order="C")            # a copy; keeps 0-d arrays 0-d
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)   # little-endian bytes
        if array.dtype.newbyteorder("=") not in _STORAGE_NAMES:
            raise ValueError(f"{name!r} is {array.dtype}: torch has no storage for it here; "
                             f"convert it to float32 first")
        tensors[name] = _TensorToSave(_Storage(str(i), array))
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(tensors)       # torch.save's pickle protocol

    def write(file):
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            _aligned_writestr(archive, "archive/data.pkl", buffer.getvalue())
            _aligned_writestr(archive, "archive/byteorder", b"little")
            for tensor in tensors.values():
                _aligned_writestr(archive, f"archive/data/{tensor.storage.key}",
                                  tensor.storage.array.tobytes())
            _aligned_writestr(archive, "archive/version", b"3\n")

    atomic_write(path, write)                   # a temporary file, renamed when complete
    return path


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
    into the data part); an optional "__metadata__" holds strings. The header
    is checked whole (validate_safetensors_header) before any array is made.
    """
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        if file_size < 8 or header_size > file_size - 8:
            raise CheckpointError(
                f"{path} is not a complete safetensors file (header of {header_size} "
                f"bytes, file of {file_size}): truncated, or another format")
        if header_size > SAFETENSORS_MAX_HEADER:
            raise CheckpointError(f"{path}: a safetensors header of {header_size} bytes is over the "
                                  f"{SAFETENSORS_MAX_HEADER}-byte limit: not a safetensors file")
        data_start = 8 + header_size
        entries = validate_safetensors_header(f.read(header_size), file_size - data_start, path)
        tensors = {}
        for name, code, shape, begin, _end in entries:
            dtype = np.dtype(_SAFETENSORS_DTYPES[code])
            array = np.empty(int(np.prod(shape)), dtype=dtype)
            f.seek(data_start + begin)
            f.readinto(array.view(np.uint8))  # straight from the file into the array
            array = array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)
            if code == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = array
    return tensors


# The reference implementation (safetensors' Rust crate) refuses headers over 100 MB.
SAFETENSORS_MAX_HEADER = 100_000_000


def _refuse_duplicate_keys(pairs):
    names = [k for k, _ in pairs]
    duplicates = sorted({k for k in names if names.count(k) > 1})
    if duplicates:
        raise CheckpointError(f"the header names {duplicates} more than once")
    return dict(pairs)


def validate_safetensors_header(raw, data_size, path):
    """The safetensors header bytes -> [(name, dtype code, shape, begin, end)] in data order.

    Checks what the reference implementation checks, so a damaged or hostile
    header never reads header bytes as weights or allocates what is not there:
    a JSON object, no name twice, known dtypes, shapes of non-negative ints,
    integer offsets 0 <= begin <= end, end - begin == numel * itemsize, and the
    ranges sorted, contiguous, non-overlapping, starting at 0 and covering
    the data part (data_size bytes) exactly. Raises CheckpointError.
    """
    def bad(problem):
        return CheckpointError(f"{path}: invalid safetensors header: {problem}. The file is damaged "
                               f"or was not written by a safetensors writer: save or download it again")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicate_keys)
    except CheckpointError as e:
        raise bad(str(e)) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad(f"a JSON {type(header).__name__}, not an object")
    metadata = header.get("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise bad("__metadata__ must map strings to strings")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= set(info)):
            raise bad(f"tensor {name!r} needs dtype, shape and data_offsets")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if code not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {code}, which miniclip cannot read")
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            raise bad(f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(n) is int for n in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise bad(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] with 0 <= begin <= end")
        begin, end = offsets
        nbytes = math.prod(shape) * np.dtype(_SAFETENSORS_DTYPES[code]).itemsize
        if end - begin != nbytes:
            raise bad(f"tensor {name!r} {code}{shape} needs {nbytes} bytes, its data_offsets "
                      f"[{begin}, {end}) hold {end - begin}")
        entries.append((name, code, tuple(shape), begin, end))
    position = 0
    for name, _code, _shape, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else "leaves a gap before it"
            raise bad(f"tensor {name!r} at bytes [{begin}, {end}) {what} (expected to start at {position})")
        position = end
    if position != data_size:
        raise bad(f"the tensors cover {position} bytes of a data part of {data_size} (truncated, "
                  f"or bytes nothing refers to)")
    return entries


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

    `hf_config`: the parsed config.json; when given, it is checked for what
    miniclip cannot compute (see config_from_hf, which reads the rest of it).
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


# Hugging Face hidden_act -> CLIPConfig.activation
_HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}
_ACTIVATION_TO_HF = {"quick_gelu": "quick_gelu", "gelu": "gelu"}
# transformers' defaults for keys a config.json may leave out (CLIPTextConfig, CLIPVisionConfig)
_HF_DEFAULTS = {"text_config": {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "num_attention_heads": 8,
                                "eos_token_id": 49407},
                "vision_config": {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "num_attention_heads": 12}}


def _hf_get(config, tower, key):
    return config.get(tower, {}).get(key, _HF_DEFAULTS[tower].get(key))


def _check_hf_config(config):
    """Refuse a Hugging Face config whose model miniclip cannot compute exactly."""
    model_type = config.get("model_type", "clip")
    if model_type != "clip":
        raise CheckpointError(
            f"config.json has model_type {model_type!r}: miniclip computes CLIP (model_type 'clip', "
            f"OpenAI's architecture with a ViT image tower), not {model_type}")
    acts = {tower: _hf_get(config, tower, "hidden_act") for tower in ("text_config", "vision_config")}
    for tower, act in acts.items():
        if act not in _HF_ACTIVATIONS:
            raise CheckpointError(
                f"{tower}.hidden_act is {act!r}: miniclip computes 'quick_gelu' (OpenAI's) and 'gelu' "
                f"(exact erf GELU) only, so this model would compute something else")
    eps = {tower: _hf_get(config, tower, "layer_norm_eps") for tower in ("text_config", "vision_config")}
    if len(set(acts.values())) > 1 or len(set(eps.values())) > 1:
        raise CheckpointError(
            f"config.json gives the towers different activations {acts} or LayerNorm eps {eps}: "
            f"miniclip uses one activation and one eps for both towers")


def config_from_hf(hf_config, state):
    """A Hugging Face config.json + its (OpenAI-named) weights -> CLIPConfig.

    The shapes give the widths, layers, patch, resolution, vocabulary and MLP
    widths; config.json gives what they cannot: heads, activation, eps and the
    end-of-text rule (eos_token_id 2 is HF's legacy "pool at the largest id",
    miniclip's rule; any other id pools at its first occurrence, as HF does).
    """
    import dataclasses
    from miniclip.model import config_from_state_dict
    _check_hf_config(hf_config)
    eos = _hf_get(hf_config, "text_config", "eos_token_id")
    config = config_from_state_dict(state)
    for tower, prefix, mlp in (("text_config", "transformer.resblocks.0", config.transformer_mlp),
                               ("vision_config", "visual.transformer.resblocks.0", config.vision_mlp)):
        size = hf_config.get(tower, {}).get("intermediate_size")
        if size is not None and size != mlp:
            raise CheckpointError(f"config.json {tower}.intermediate_size is {size}, but the weights' "
                                  f"{prefix}.mlp.c_fc.weight has {mlp} rows: the config is not this model's")
    try:
        return dataclasses.replace(
            config,
            transformer_heads=int(_hf_get(hf_config, "text_config", "num_attention_heads")),
            vision_heads=int(_hf_get(hf_config, "vision_config", "num_attention_heads")),
            activation=_HF_ACTIVATIONS[_hf_get(hf_config, "text_config", "hidden_act")],
            layer_norm_eps=float(_hf_get(hf_config, "text_config", "layer_norm_eps")),
            eos_token_id=None if eos == 2 else int(eos))
    except ValueError as e:
        raise CheckpointError(f"config.json does not fit its weights: {e}") from e


def hf_config(state, config=None):
    """The config.json of a Hugging Face CLIPModel for an OpenAI-named state dict.

    config: the model's CLIPConfig (heads, activation, eps, MLP widths, end-of-text
    rule); None reads it off the shapes the way OpenAI's build_model does.
    eos_token_id: 2 (HF's legacy rule: pool at each row's largest id, which is
    miniclip's rule for any vocabulary), or the config's own eos_token_id.
    """
    from miniclip.model import config_from_state_dict
    c = config_from_state_dict(state) if config is None else config
    common = {"attention_dropout": 0.0, "hidden_act": _ACTIVATION_TO_HF[c.activation], "initializer_factor": 1.0,
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


def _write_json(path, value):
    _write_text(path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _write_text(path, text):
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def write_hf_tokenizer(tokenizer, folder, context_length=77):
    """Write the files Hugging Face's CLIPTokenizer reads, from a miniclip Tokenizer.

    vocab.json   token string -> id (byte-level BPE symbols, `</w>` ends a word);
                 where two merges spell one string the later id wins, as in
                 Tokenizer.encoder (and OpenAI's dict), so encoding agrees
    merges.txt   "#version: 0.2" then one "left right" line per merge, in rank order
    tokenizer_config.json, special_tokens_map.json
                 start/end tokens, pad "!" (id 0: miniclip and OpenAI pad with 0),
                 model_max_length = the context length
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    from miniclip.tokenizer import EOT_TEXT, SOT_TEXT
    _write_json(os.path.join(folder, "vocab.json"), dict(sorted(tokenizer.encoder.items(), key=lambda kv: kv[1])))
    _write_text(os.path.join(folder, "merges.txt"),
                "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in tokenizer.merges))
    special = {"bos_token": SOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT,
               "pad_token": tokenizer.vocab[0]}
    _write_json(os.path.join(folder, "special_tokens_map.json"), special)
    _write_json(os.path.join(folder, "tokenizer_config.json"), dict(
        special, tokenizer_class="CLIPTokenizer", model_max_length=context_length,
        do_lower_case=True, errors="replace", add_prefix_space=False))


def write_hf_preprocessor(folder, resolution, mean=None, std=None):
    """preprocessor_config.json for CLIPImageProcessor: miniclip's Preprocess
    (bicubic resize of the short side, centre crop, /255, mean/std)."""
    from miniclip.data.transforms import MEAN, STD
    _write_json(os.path.join(os.fspath(folder), "preprocessor_config.json"), {
        "crop_size": {"height": resolution, "width": resolution}, "do_center_crop": True,
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": list(MEAN if mean is None else mean), "image_std": list(STD if std is None else std),
        "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": resolution}})  # 3: bicubic


def _tokenizer_for(vocab_size):
    """The tokenizer a model of this vocabulary was made with, when that is clear."""
    from miniclip.tokenizer import Tokenizer, _openai_tokenizer
    if vocab_size == 49408:
        return _openai_tokenizer()
    default = Tokenizer.default()
    return default if len(default) == vocab_size else None


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
    state = {name: value.astype(np.float32) for name, value in state.items()}
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    config_json = hf_config(state, config)
    vocab_size = config_json["text_config"]["vocab_size"]
    if tokenizer is None:
        tokenizer = _tokenizer_for(vocab_size)
        if tokenizer is None:
            import warnings
            warnings.warn(f"export_hf: no tokenizer files written: the model has {vocab_size} token ids, "
                          f"neither OpenAI's 49408 nor miniclip's default vocabulary; pass "
                          f"export_hf(model, folder, tokenizer=...)", UserWarning, stacklevel=2)
    elif len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids, more than the model's "
                         f"{vocab_size}: it is not this model's tokenizer")
    # transformers refuses safetensors files without format "pt" in the metadata
    write_safetensors(os.path.join(folder, "model.safetensors"), openai_to_hf(state), metadata={"format": "pt"})
    _write_json(os.path.join(folder, "config.json"), config_json)
    context = config_json["text_config"]["max_position_embeddings"]
    if tokenizer is not None:
        write_hf_tokenizer(tokenizer, folder, context_length=context)
    write_hf_preprocessor(folder, config_json["vision_config"]["image_size"])
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
    """The OpenAI model names load() accepts: the five ResNets and the four ViTs (OpenAI's order)."""
    return list(_MODELS)


# What a model folder may hold, in the order looked for. OpenCLIP's published
# folders name their weights open_clip_*; Hugging Face's may be sharded.
_FOLDER_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json", "open_clip_model.safetensors",
                   "open_clip_pytorch_model.bin")


def _read_weights_file(path):
    """One file -> {name: ndarray}, as stored (no renaming)."""
    if path.endswith(".index.json"):
        return _read_sharded(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith(".npz"):
        try:  # a miniclip checkpoint: only its weights (it also holds optimiser state)
            return load_checkpoint(path, optimiser=False)["params"]
        except ValueError as e:
            raise CheckpointError(str(e)) from e
    return read_torch_checkpoint(path)


def _read_sharded(index_path):
    """A Hugging Face shard index {"weight_map": {name: shard file}} -> all the shards' tensors."""
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a shard index with a weight_map ({e})") from e
    folder, state = os.path.dirname(index_path), {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if os.path.basename(shard) != shard or not os.path.isfile(shard_path):
            raise CheckpointError(f"{index_path} names the shard {shard!r}, which is not a file in {folder}")
        tensors = _read_weights_file(shard_path)
        for name, value in tensors.items():
            if weight_map.get(name) == shard:
                state[name] = value
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index_path}: {len(missing)} tensors of the weight_map are not in their "
                              f"shards, e.g. {missing[0]!r}: a shard is incomplete")
    return state


def _is_torchscript(path):
    """A TorchScript archive (torch.jit.save, OpenAI's released .pt files) holds code/."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in "/" + name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e


def read_checkpoint(path):
    """Whatever `path` is -> Checkpoint(state with OpenAI names, config or None, kind, preprocess kwargs).

    kind: "torchscript" (OpenAI's archives: OpenAI's architecture by construction),
    "miniclip" (an .npz of a training run), "huggingface" (HF names; config from
    config.json beside them when there is one), "open_clip" (a folder with
    open_clip_config.json), "state_dict" (weights alone). config is a CLIPConfig
    when the files say enough, else None.
    """
    from miniclip.model import config_from_open_clip
    path = os.fspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.isdir(path):
        found = [name for name in _FOLDER_WEIGHTS if os.path.isfile(os.path.join(path, name))]
        if not found:
            raise FileNotFoundError(
                f"{path} is a folder without model weights: looked for {', '.join(_FOLDER_WEIGHTS)}")
        path = os.path.join(path, found[0])
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = _read_weights_file(path)
    if state and all(name.startswith("module.") for name in state):
        state = {name[len("module."):]: value for name, value in state.items()}   # saved from DistributedDataParallel
    kind, config, preprocess = "state_dict", None, {}
    if path.endswith(".npz"):
        kind = "miniclip"
    elif not path.endswith((".safetensors", ".json")) and _is_torchscript(path):
        kind = "torchscript"
    if any(name.startswith(("text_model.", "vision_model.")) for name in state):
        kind = "huggingface"
        config_path = os.path.join(folder, "config.json")
        hf = _read_json(config_path) if os.path.isfile(config_path) else None
        state = hf_to_openai(state, hf)
        if hf is not None:
            check_supported(state, path)
            config = config_from_hf(hf, state)
    open_clip_path = os.path.join(folder, "open_clip_config.json")
    if kind == "state_dict" and os.path.isfile(open_clip_path):
        kind = "open_clip"
        meta = _read_json(open_clip_path)
        if "model_cfg" not in meta:
            raise CheckpointError(f"{open_clip_path} has no model_cfg: not an OpenCLIP model folder")
        config = config_from_open_clip(meta["model_cfg"])
        pre = meta.get("preprocess_cfg", {})
        preprocess = {k: tuple(pre[k]) for k in ("mean", "std") if k in pre}
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


# Keys (substrings) of structures miniclip does not compute -> what they are.
_UNSUPPORTED = (
    ("logit_bias", "a logit bias (SigLIP's sigmoid-loss head)"),
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


# --------------------------------------------------------------------------
# Checks before a model is built (a small file must not build a huge model)
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
    return vision + text


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


def check_config_fits_state(config, state, path):
    """Refuse, before building, a config whose model would not be exactly the weights present.

    config: a CLIPConfig; state: {name: array} (OpenAI names); the config's
    fields must be positive ints and its parameter count equal the numbers in
    `state`, so the model built is never larger than what the file holds.
    """
    fields = {k: v for k, v in vars(config).items() if v is not None
              and k not in ("activation", "layer_norm_eps", "eos_token_id")}
    bad = {k: v for k, v in fields.items()
           if not (type(v) is int and v > 0 or k == "vision_layers" and isinstance(v, tuple))}
    if bad:
        raise CheckpointError(f"{path}: its model config has invalid values {bad}: each must be a "
                              f"positive integer; the file is damaged or crafted")
    present = sum(int(np.size(v)) for k, v in state.items() if k not in OPENAI_EXTRA_KEYS)
    needed = config_parameter_count(config)
    if needed != present:
        raise CheckpointError(
            f"{path}: its model config (widths {config.vision_width}/{config.transformer_width}, "
            f"layers {config.vision_layers}/{config.transformer_layers}, vocab {config.vocab_size}) "
            f"needs {needed:,} parameters, but the file holds {present:,}: the shapes do not belong "
            f"together; the file is damaged or crafted. Nothing was built")


def _checkpoint_path(name_or_path):
    """An OpenAI model name -> its local file (assets folder, cache, else
    downloaded and sha256-checked); an existing path -> itself."""
    if name_or_path in _MODELS:
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
    from miniclip.model import OPENCLIP_CONFIGS
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
    ...; see miniclip.model.OPENCLIP_CONFIGS). None: the folder's config
    (Hugging Face config.json, OpenCLIP open_clip_config.json), OpenAI's for a
    TorchScript archive; for weights alone OpenAI's conventions, with a warning.
    Weights become float32 unless `dtype` is given (OpenAI's fp16 weights too).
    device: 'cpu' or 'cuda' (default: MINICLIP_DEVICE). The model is in eval
    mode; preprocess(PIL image) -> (3, R, R) float32.
    """
    import warnings
    from miniclip.backend import default_device
    from miniclip.data.transforms import Preprocess
    from miniclip.model import CLIP, get_config
    if isinstance(config, str):
        config = get_config(config)
    path = _checkpoint_path(name_or_path)
    if str(path).endswith(".npz") and config is None:   # a miniclip run: its saved config, not inferred heads
        from miniclip.checkpoint import model_from_checkpoint
        model = model_from_checkpoint(path, device)[0].astype(dtype or np.float32)
        return model, Preprocess(model.config.image_resolution)
    checkpoint = read_checkpoint(path)
    state = checkpoint.state
    given = config is not None
    if config is None:
        config = checkpoint.config
    if not given:   # a config the user names is checked key by key as the weights load
        from miniclip.model import config_from_state_dict
        check_config_fits_state(config if config is not None else config_from_state_dict(state), state, path)
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
