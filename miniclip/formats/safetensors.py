"""safetensors files, read and written: an 8-byte little-endian header length,
a JSON header {name: {dtype, shape, data_offsets}}, then the raw bytes. No code at all.

    state = read_safetensors("model.safetensors")   # {name: ndarray}
    write_safetensors("out.safetensors", state)      # atomically
"""
import json
import math
import os

import numpy as np

from miniclip.backend import to_numpy
from miniclip.fileio import atomic_write
from miniclip.formats.checks import CheckpointError


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
