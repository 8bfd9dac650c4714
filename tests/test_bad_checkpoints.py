"""Hostile or damaged checkpoint files (issue 12, items 6 and 8): each one is refused
with a CheckpointError naming the file and the problem, quickly, without allocating
more than the file can hold. The files are built here, byte by byte."""
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from miniclip.pretrained import CheckpointError, read_safetensors


# ---- safetensors (item 6) ---------------------------------------------------------------

def safetensors_bytes(header, data, raw_header=None):
    blob = raw_header if raw_header is not None else json.dumps(header).encode()
    return len(blob).to_bytes(8, "little") + blob + data


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_valid_two_tensor_file_reads(tmp_path):
    a, b = np.arange(4, dtype="<f4"), np.arange(2, dtype="<i8")
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [16, 32]}}
    out = read_safetensors(write(tmp_path, "ok.safetensors", safetensors_bytes(header, a.tobytes() + b.tobytes())))
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)


@pytest.mark.parametrize("header, problem", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlaps"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, "gap"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, "cover 8 bytes of a data part of 16"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, "needs 12 bytes"),
    ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "shape"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16.0]}}, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [4]}}, "needs dtype, shape and data_offsets"),
    ({"w": [1, 2]}, "needs dtype"),
    ([1, 2, 3], "not an object"),
    ({"__metadata__": {"a": 1}}, "__metadata__"),
])
def test_bad_headers_are_refused(tmp_path, header, problem):
    path = write(tmp_path, "bad.safetensors", safetensors_bytes(header, bytes(16)))
    with pytest.raises(CheckpointError, match=problem) as err:
        read_safetensors(path)
    assert str(path) in str(err.value)


def test_duplicate_names_refused(tmp_path):
    raw = (b'{"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},'
           b' "w": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}')
    path = write(tmp_path, "dup.safetensors", safetensors_bytes(None, bytes(8), raw_header=raw))
    with pytest.raises(CheckpointError, match=r"names \['w'\] more than once"):
        read_safetensors(path)


def test_malformed_json_is_a_checkpoint_error(tmp_path):
    for raw in (b"{not json", b"\xff\xfe{}", b"[" * 100000):
        path = write(tmp_path, "junk.safetensors", safetensors_bytes(None, b"", raw_header=raw))
        with pytest.raises(CheckpointError, match="invalid safetensors header"):
            read_safetensors(path)
