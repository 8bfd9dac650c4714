"""PyTorch zip archives (`torch.save`, `torch.jit.save`), read and written without torch.

    state = read_torch_checkpoint("ViT-B-32.pt")     # {name: ndarray}, OpenAI names
    save_torch_state_dict(model, "weights.pt")       # torch.load(..., weights_only=True) reads it

A zip holding `<top>/data.pkl`, a pickle that describes the object, and one
raw little-endian byte file `<top>/data/<n>` per storage. Each tensor in the
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
"""
import collections
import io
import math
import os
import pickle
import zipfile
import zlib

import numpy as np
from numpy.lib.stride_tricks import as_strided

from miniclip.backend import to_numpy
from miniclip.fileio import atomic_write
from miniclip.formats.checks import CheckpointError


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
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

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
        head = f.read(len(LEGACY_TORCH_MAGIC))
    if head == LEGACY_TORCH_MAGIC:
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


