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
import zlib

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


# ---- tiny files that would take gigabytes (item 8) ---------------------------------------
# Pickle protocol-2 opcodes: the helpers test_pretrained.py builds its torch zips with.
from test_pretrained import op_global, op_int, op_str, op_tuple  # noqa: E402


def tensor_pickle(key, numel, offset, size, stride, storage_type="FloatStorage"):
    storage = op_tuple([op_str("storage"), op_global("torch", storage_type), op_str(key),
                        op_str("cpu"), op_int(numel)]) + b"Q"   # BINPERSID
    args = op_tuple([storage, op_int(offset), op_tuple(map(op_int, size)), op_tuple(map(op_int, stride)),
                     b"\x89", op_global("collections", "OrderedDict") + b")R"])
    return op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_dict_pickle(body):
    return b"\x80\x02" + op_global("collections", "OrderedDict") + b")R(" + body + b"u."


def raw_zip(path, entries):
    """A zip written by hand: entries = [(name, stored bytes, method, declared size, crc)].
    (zipfile would compress honestly; a bomb declares what it likes.)"""
    out, central = bytearray(), bytearray()
    for name, data, method, size, crc in entries:
        offset = len(out)
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 33, crc, len(data), size, len(name), 0)
        out += b"PK\x03\x04" + fields + name.encode() + data
        central += (b"PK\x01\x02" + struct.pack("<H", 20) + fields
                    + struct.pack("<HHHII", 0, 0, 0, 0, offset) + name.encode())
    end = struct.pack("<HHHHIIH", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    path.write_bytes(bytes(out + central) + b"PK\x05\x06" + end)
    return path


def stored(name, data):
    return (name, data, zipfile.ZIP_STORED, len(data), zipfile.crc32(data))


def run_limited(code, limit=3 << 30):
    """Run `code` in a fresh Python under an address-space limit; -> (stdout + stderr, seconds)."""
    script = (f"import resource, time\nresource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
              f"from miniclip.pretrained import CheckpointError\nstart = time.time()\n"
              f"try:\n{textwrap.indent(textwrap.dedent(code), '    ')}\n"
              f"except CheckpointError as e:\n    print('CheckpointError:', e)\n"
              f"print('seconds', time.time() - start)\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, env=env)
    output = result.stdout + result.stderr
    seconds = float(output.rsplit("seconds", 1)[1]) if "seconds" in output else math.inf
    return output, seconds


def assert_refused(output, seconds, path, problem):
    assert "CheckpointError:" in output and str(path) in output and problem in output, output
    assert seconds < 1.0, output


def test_stride0_tensor_is_refused_without_allocating(tmp_path):
    body = op_str("w") + tensor_pickle("0", 4, 0, (1 << 16, 1 << 14), (0, 0))  # 4 GiB from 16 bytes
    path = raw_zip(tmp_path / "stride0.pt", [stored("a/data.pkl", state_dict_pickle(body)),
                                             stored("a/data/0", bytes(16))])
    output, seconds = run_limited(f"from miniclip.pretrained import read_torch_checkpoint\n"
                                  f"read_torch_checkpoint({str(path)!r})")
    assert_refused(output, seconds, path, "stride-0")


def test_storage_bigger_than_its_zip_entry_is_refused(tmp_path):
    body = op_str("w") + tensor_pickle("0", 1 << 30, 0, (1 << 30,), (1,))
    path = raw_zip(tmp_path / "short.pt", [stored("a/data.pkl", state_dict_pickle(body)),
                                           stored("a/data/0", bytes(64))])
    output, seconds = run_limited(f"from miniclip.pretrained import read_torch_checkpoint\n"
                                  f"read_torch_checkpoint({str(path)!r})")
    assert_refused(output, seconds, path, "holds 64 bytes")


def zip_bomb_entry(name, gigabytes):
    """A deflate stream of `gigabytes` GB of zeros (~1 KB per MB), declared at its full size."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(bytes(1 << 20)), c.flush(zlib.Z_FULL_FLUSH)
    piece = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every MB
    count = int(gigabytes * 1024)
    return (name, piece * count + c.flush(), zipfile.ZIP_DEFLATED, count << 20, 0)


def test_zip_bomb_reads_only_what_its_tensor_needs(tmp_path):
    body = op_str("w") + tensor_pickle("0", 16, 0, (16,), (1,))
    path = raw_zip(tmp_path / "bomb.pt", [stored("a/data.pkl", state_dict_pickle(body)),
                                          zip_bomb_entry("a/data/0", 3.2)])
    assert path.stat().st_size < 4 << 20
    output, seconds = run_limited(f"from miniclip.pretrained import read_torch_checkpoint\n"
                                  f"print('shape', read_torch_checkpoint({str(path)!r})['w'].shape)")
    assert "shape (16,)" in output and seconds < 1.0, output


def test_huge_storage_only_its_used_part_is_read(tmp_path):
    body = op_str("w") + tensor_pickle("0", 1 << 28, 0, (16,), (1,))  # a 1 GiB storage, 16 used
    path = raw_zip(tmp_path / "bomb2.pt", [stored("a/data.pkl", state_dict_pickle(body)),
                                           zip_bomb_entry("a/data/0", 1.0)])
    output, seconds = run_limited(f"from miniclip.pretrained import read_torch_checkpoint\n"
                                  f"print('shape', read_torch_checkpoint({str(path)!r})['w'].shape)",
                                  limit=1 << 30)
    assert "shape (16,)" in output and seconds < 1.0, output


def module(cls, attributes, put=None):
    """A TorchScript module: NEWOBJ, [BINPUT put], then BUILD with its attribute dict."""
    items = b"".join(op_str(k) + v for k, v in attributes.items())
    memo = b"q" + bytes([put]) if put is not None else b""
    return op_global("__torch__.m", cls) + b")\x81" + memo + b"}(" + items + b"ub"


def get(index):
    return b"h" + bytes([index])                            # BINGET


def script_archive(path, data_pkl):
    return raw_zip(path, [stored("a/data.pkl", data_pkl), stored("a/data/0", bytes(8))])


def test_shared_module_tree_is_walked_once(tmp_path):
    # level k holds level k-1 twice (memo references): 2**40 paths, 41 objects
    pkl = b"\x80\x02" + module("L0", {"w": tensor_pickle("0", 2, 0, (2,), (1,))}, put=0)
    for k in range(1, 41):
        pkl += b"0"  # POP the previous level: it stays in the memo
        pkl += module(f"L{k}", {"a": get(k - 1), "b": get(k - 1)}, put=k)
    path = script_archive(tmp_path / "shared.pt", pkl + b".")
    output, seconds = run_limited(f"from miniclip.pretrained import read_torch_checkpoint\n"
                                  f"print('names', len(read_torch_checkpoint({str(path)!r})))")
    assert "names 1" in output and seconds < 1.0, output


def test_module_holding_itself_ends_the_walk(tmp_path):
    # NEWOBJ, BINPUT 0, BUILD({"w": tensor, "me": BINGET 0})
    pkl = b"\x80\x02" + module("Loop", {"w": tensor_pickle("0", 2, 0, (2,), (1,)), "me": get(0)}, put=0) + b"."
    from miniclip.pretrained import read_torch_checkpoint
    assert list(read_torch_checkpoint(script_archive(tmp_path / "loop.pt", pkl))) == ["w"]


def test_too_deep_module_tree_is_refused(tmp_path):
    inner = module("Leaf", {"w": tensor_pickle("0", 2, 0, (2,), (1,))})
    for k in range(100):
        inner = module(f"M{k}", {"sub": inner})
    path = script_archive(tmp_path / "deep.pt", b"\x80\x02" + inner + b".")
    from miniclip.pretrained import read_torch_checkpoint
    with pytest.raises(CheckpointError, match="deep.pt: its module tree is more than 64 levels"):
        read_torch_checkpoint(path)


def inflated_state():
    """OpenAI names with zero-element arrays whose shapes claim a huge model (8192 wide, 48 layers)."""
    state = {"visual.conv1.weight": np.zeros((8192, 0, 0, 32), np.float32),
             "visual.positional_embedding": np.zeros((50, 0), np.float32),
             "text_projection": np.zeros((0, 512), np.float32),
             "positional_embedding": np.zeros((77, 0), np.float32),
             "token_embedding.weight": np.zeros((49408, 0), np.float32),
             "ln_final.weight": np.zeros((8192, 0), np.float32)}
    for k in range(48):
        state[f"transformer.resblocks.{k}.ln_1.weight"] = np.zeros((0,), np.float32)
        state[f"visual.transformer.resblocks.{k}.ln_1.weight"] = np.zeros((0,), np.float32)
    return state


def test_inflated_shapes_refused_before_building(tmp_path):
    from miniclip.pretrained import write_safetensors
    path = tmp_path / "inflated.safetensors"
    write_safetensors(path, inflated_state())
    assert path.stat().st_size < 16000
    output, seconds = run_limited(f"from miniclip.pretrained import load\nload({str(path)!r})")
    assert_refused(output, seconds, path, "Nothing was built")


def test_npz_checkpoint_with_a_huge_config_refused(tmp_path):
    from miniclip.checkpoint import save_checkpoint
    from miniclip.config import get_config
    from miniclip.model import CLIP
    model = CLIP(get_config("micro"))
    big = dict(vars(get_config("ViT-L/14")))
    big["vision_layers"] = big["transformer_layers"] = 200
    path = tmp_path / "big.npz"
    save_checkpoint(path, model, meta={"model": big})
    output, seconds = run_limited(f"from miniclip.checkpoint import model_from_checkpoint\n"
                                  f"model_from_checkpoint({str(path)!r})")
    assert_refused(output, seconds, path, "needs")
    bad = dict(vars(get_config("micro")), vision_patch_size=0)
    save_checkpoint(path, model, meta={"model": bad})
    from miniclip.checkpoint import model_from_checkpoint
    with pytest.raises(CheckpointError, match="big.npz: its model config"):
        model_from_checkpoint(path)


def test_parameter_count_formula_matches_the_model():
    from miniclip.config import get_config
    from miniclip.model import CLIP
    from miniclip.pretrained import config_parameter_count
    for name in ("micro", "tiny"):
        assert config_parameter_count(get_config(name)) == CLIP(get_config(name)).num_parameters()
