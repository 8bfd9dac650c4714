"""What a NumPy .npz archive (a miniclip checkpoint) declares, read before any array is.

An .npz is a zip of .npy files; each starts with a small header giving its
shape and dtype. np.load allocates what a header declares before it reads a
byte of data, so a few megabytes of compressed zeros that declare gigabytes
would be allocated in full. Here only the headers are read: a caller checks
the declared sizes (against each other, the zip's own sizes, and the model's
parameter count) and reads the arrays only when they add up.
"""
import json
import math
import zipfile
import zlib

import numpy as np

from miniclip.formats.checks import CheckpointError


def npz_declared(path):
    """{array name: (shape, dtype)} of an .npz, from the .npy headers alone (no data read).

    Refused (CheckpointError naming the file and member): a file that is not a
    complete zip, a member that is not an .npy, an object (pickled) dtype, or
    a header declaring more bytes than the zip entry holds (a damaged or
    crafted file: np.load would allocate the declared size first).
    """
    declared = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename[:-len(".npy")] if info.filename.endswith(".npy") else info.filename
                with archive.open(info) as f:
                    shape, dtype, header_size = _read_npy_header(f, path, info.filename)
                data_bytes = math.prod(shape) * dtype.itemsize
                if data_bytes > info.file_size - header_size:
                    raise CheckpointError(
                        f"{path}: array {name!r} declares shape {shape} of {dtype} ({data_bytes:,} bytes), "
                        f"but its zip entry holds {info.file_size - header_size:,}: the file is damaged "
                        f"or crafted; use another checkpoint")
                declared[name] = (shape, dtype)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable .npz archive ({e}); it may be truncated "
                              f"(a crash while it was written): use another checkpoint") from None
    return declared


def _read_npy_header(f, path, member):
    """(shape, dtype, header bytes) of the .npy file open at its start."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy format version {version}")
    except ValueError as e:
        raise CheckpointError(f"{path}: member {member!r} is not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise CheckpointError(f"{path}: array {member!r} holds Python objects (pickles), which "
                              f"miniclip never loads: not a miniclip checkpoint")
    return tuple(shape), dtype, f.tell()


def npz_param_shapes(path, prefix="param/"):
    """{name: shape} of the arrays under `prefix` (a checkpoint's weights), declared sizes only."""
    return {name[len(prefix):]: shape for name, (shape, _dtype) in npz_declared(path).items()
            if name.startswith(prefix)}


# A checkpoint's metadata (config, tokenizer merges) is a few megabytes at most.
MAX_JSON_BYTES = 64_000_000


def npz_json(path, name):
    """The JSON text stored as the 0-d string array `name` of an .npz, parsed; {} when absent.

    Its declared size is checked (at most MAX_JSON_BYTES) before it is read."""
    declared = npz_declared(path)
    if name not in declared:
        return {}
    shape, dtype = declared[name]
    if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: {name!r} is a {dtype} array of shape {shape}, not the short "
                              f"JSON text a miniclip checkpoint keeps there")
    with np.load(path, allow_pickle=False) as archive:
        text = str(archive[name])
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: {name!r} is not valid JSON ({e})") from None
