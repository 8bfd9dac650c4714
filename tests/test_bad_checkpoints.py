"""Hostile or damaged checkpoint files (issue 12, items 6 and 8): each one is refused
with a CheckpointError naming the file and the problem, quickly, without allocating
more than the file can hold. The files are built here, byte by byte."""
import io
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


# ---- config files, weights and archives (issue 24, round four) --------------------------
# Each file is built here; each refusal must be a CheckpointError naming the file and the key.

def micro_model():
    from miniclip.config import get_config
    from miniclip.model import CLIP
    return CLIP(get_config("micro"), seed=1)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A Hugging Face folder of the micro model (export_hf), to edit per test."""
    from miniclip.pretrained import export_hf
    from miniclip.tokenizer import Tokenizer
    folder = tmp_path_factory.mktemp("hf")
    export_hf(micro_model(), folder, tokenizer=Tokenizer.default())
    return folder


def edited_hf_folder(hf_folder, tmp_path, edit):
    """A copy of hf_folder whose config.json is edit(parsed config) (or raw text when edit returns str)."""
    import shutil
    folder = tmp_path / "hf"
    shutil.copytree(hf_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    result = edit(config)
    (folder / "config.json").write_text(result if isinstance(result, str) else json.dumps(config))
    return folder


def refused(folder_or_file, *needles):
    from miniclip.pretrained import load
    with pytest.raises(CheckpointError) as err:
        load(str(folder_or_file), device="cpu")
    message = str(err.value)
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message, message
    return message


def test_the_exported_hf_folder_loads(hf_folder):
    from miniclip.pretrained import load
    model, _ = load(str(hf_folder), device="cpu")
    assert model.config.vocab_size == 1000


@pytest.mark.parametrize("value", [10 ** 9, True, 2.5, -1, "49407", None])
def test_hf_eos_token_id_out_of_range_or_not_an_integer_is_refused(hf_folder, tmp_path, value):
    """Item 9: these loaded, pooling at a wrong row (wrong text features, exit 0)."""
    folder = edited_hf_folder(hf_folder, tmp_path, lambda c: c["text_config"].update(eos_token_id=value))
    refused(folder, str(folder / "config.json"), "text_config.eos_token_id", "integer from 0 to 999")


@pytest.mark.parametrize("edit, key", [
    (lambda c: "[]", "the file is a JSON array"),
    (lambda c: c.update(text_config="clip"), "text_config is a JSON string"),
    (lambda c: c["text_config"].update(num_attention_heads=None), "text_config.num_attention_heads = null"),
    (lambda c: c["vision_config"].update(num_attention_heads=[2]), "vision_config.num_attention_heads = [2]"),
    (lambda c: c["text_config"].update(layer_norm_eps=None), "text_config.layer_norm_eps = null"),
    (lambda c: c["vision_config"].update(layer_norm_eps=[1e-5]), "vision_config.layer_norm_eps = [1e-05]"),
    (lambda c: c["text_config"].update(hidden_act=7), "text_config.hidden_act = 7"),
    (lambda c: c["vision_config"].update(intermediate_size="256"), "vision_config.intermediate_size"),
    (lambda c: "{not json", "not a readable JSON config"),
])
def test_hf_config_of_the_wrong_shape_is_refused_naming_file_and_key(hf_folder, tmp_path, edit, key):
    """Item 23: AttributeError / TypeError tracebacks before."""
    folder = edited_hf_folder(hf_folder, tmp_path, edit)
    refused(folder, str(folder / "config.json"), key)


def open_clip_folder(tmp_path, model_cfg=None, preprocess_cfg=None, raw=None):
    """An OpenCLIP folder holding the micro model's weights and this open_clip_config.json."""
    from miniclip.pretrained import write_safetensors
    folder = tmp_path / "oc"
    folder.mkdir()
    write_safetensors(folder / "open_clip_model.safetensors", micro_model().state_dict())
    good = {"embed_dim": 64, "quick_gelu": True,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 64, "patch_size": 8},
            "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 1, "layers": 2}}
    meta = {"model_cfg": good if model_cfg is None else model_cfg(good),
            "preprocess_cfg": preprocess_cfg or {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}
    (folder / "open_clip_config.json").write_text(raw if raw is not None else json.dumps(meta))
    return folder


def test_the_open_clip_folder_loads(tmp_path):
    from miniclip.pretrained import load
    model, preprocess = load(str(open_clip_folder(tmp_path)), device="cpu")
    assert model.config.vision_layers == 2
    np.testing.assert_array_equal(preprocess.mean.ravel(), [0.5, 0.5, 0.5])


@pytest.mark.parametrize("edit, key", [
    (lambda c: dict(c, vision_cfg=dict(c["vision_cfg"], head_width=0)), "model_cfg.vision_cfg.head_width = 0"),
    (lambda c: dict(c, vision_cfg=dict(c["vision_cfg"], head_width=48)), "model_cfg.vision_cfg.head_width = 48"),
    (lambda c: [], "model_cfg is a JSON array"),
    (lambda c: dict(c, vision_cfg="ViT-B-32"), "model_cfg.vision_cfg is a JSON string"),
    (lambda c: dict(c, text_cfg=dict(c["text_cfg"], heads=None)), "model_cfg.text_cfg.heads = null"),
    (lambda c: dict(c, vision_cfg=dict(c["vision_cfg"], mlp_ratio="4")), "model_cfg.vision_cfg.mlp_ratio"),
    (lambda c: dict(c, quick_gelu="yes"), "model_cfg.quick_gelu"),
    (lambda c: {k: v for k, v in c.items() if k != "embed_dim"}, "missing key model_cfg.embed_dim"),
])
def test_open_clip_config_of_the_wrong_shape_is_refused_naming_file_and_key(tmp_path, edit, key):
    """Item 23: ZeroDivisionError / AttributeError / TypeError tracebacks before; a missing
    key said "missing entry 'embed_dim'" without the file."""
    folder = open_clip_folder(tmp_path, model_cfg=edit)
    refused(folder, str(folder / "open_clip_config.json"), key)


@pytest.mark.parametrize("pre, key", [
    ({"mean": [float("nan"), 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "preprocess_cfg.mean"),
    ({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0, 0.5]}, "preprocess_cfg.std"),
    ({"mean": [0.5, 0.5, 0.5], "std": [0.5, -1, 0.5]}, "preprocess_cfg.std"),
    ({"mean": [0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "preprocess_cfg.mean"),
    ({"mean": 0.5, "std": [0.5, 0.5, 0.5]}, "preprocess_cfg.mean"),
])
def test_open_clip_preprocessing_that_makes_nan_features_is_refused(tmp_path, pre, key):
    """Item 11: a NaN mean or a 0 std gave NaN features (exit 0)."""
    folder = open_clip_folder(tmp_path, preprocess_cfg=pre)
    refused(folder, str(folder / "open_clip_config.json"), key)


def nan_state(value, name="ln_final.weight"):
    state = micro_model().state_dict()
    state[name] = state[name].copy()
    state[name].flat[3] = value
    return state


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", ["safetensors", "pt", "npz", "hf"])
def test_a_nan_or_inf_weight_is_refused_naming_the_tensor(tmp_path, kind, value):
    """Item 10: zero-shot printed `nan%` for every label."""
    from miniclip.checkpoint import save_checkpoint
    from miniclip.pretrained import export_hf, save_torch_state_dict, write_safetensors
    from miniclip.tokenizer import Tokenizer
    state = nan_state(value)
    if kind == "safetensors":
        path = tmp_path / "w.safetensors"
        write_safetensors(path, state)
    elif kind == "pt":
        path = tmp_path / "w.pt"
        save_torch_state_dict(state, path)
    elif kind == "hf":
        path = tmp_path / "hf"
        export_hf(state, path, tokenizer=Tokenizer.default())
    else:
        path = tmp_path / "w.npz"
        model = micro_model()
        model.load_state_dict(state)
        save_checkpoint(path, model, meta={"model": dict(vars(model.config))})
    name = "text_model.final_layer_norm.weight" if kind == "hf" else "ln_final.weight"
    refused(path, str(path), repr(name), "NaN or infinite")


def test_a_nan_weight_in_a_training_checkpoint_is_refused_by_eval(tmp_path):
    from miniclip.checkpoint import model_from_checkpoint, save_checkpoint
    model = micro_model()
    model.load_state_dict(nan_state(np.nan, "visual.proj"))
    save_checkpoint(tmp_path / "c.npz", model, meta={"model": dict(vars(model.config))})
    with pytest.raises(CheckpointError, match=r"c.npz: weight 'visual.proj' holds 1 NaN"):
        model_from_checkpoint(tmp_path / "c.npz")


@pytest.mark.parametrize("change", ["extra", "missing", "missing-shape-key"])
def test_a_state_dict_with_one_extra_or_missing_key_names_the_key(tmp_path, change):
    """Weak case: this said only that the parameter count differs (or, for a weight the
    config is read from, named the key without the file)."""
    from miniclip.pretrained import write_safetensors
    state = micro_model().state_dict()
    if change == "extra":
        state["visual.transformer.resblocks.0.attn.bias_k"] = np.zeros((1, 1, 64), np.float32)
        needle = "unexpected 'visual.transformer.resblocks.0.attn.bias_k'"
    elif change == "missing":
        del state["ln_final.bias"]
        needle = "missing 'ln_final.bias'"
    else:
        del state["ln_final.weight"]
        needle = "has no 'ln_final.weight'"
    path = tmp_path / "w.safetensors"
    write_safetensors(path, state)
    refused(path, str(path), needle)


def npy_header(shape, dtype="<f4"):
    """The bytes np.save writes before an array's data (format 1.0)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npz_bomb(tmp_path, declared_elements):
    """A micro checkpoint whose 'param/visual.proj' declares `declared_elements` float32s in a
    deflated entry whose zip header declares the matching size: a few kilobytes on disk."""
    from miniclip.checkpoint import save_checkpoint
    model = micro_model()
    good = tmp_path / "good.npz"
    save_checkpoint(good, model, meta={"model": dict(vars(model.config))})
    entries = []
    with zipfile.ZipFile(good) as archive:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == "param/visual.proj.npy":
                header = npy_header((declared_elements,))
                compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
                body = compressor.compress(header + bytes(1 << 16)) + compressor.flush()
                size = len(header) + 4 * declared_elements
                entries.append((info.filename, body, zipfile.ZIP_DEFLATED, size, 0))
            else:
                entries.append(stored(info.filename, data))
    return raw_zip(tmp_path / "bomb.npz", entries)


def test_a_small_npz_declaring_gigabytes_is_refused_before_any_array_is_read(tmp_path):
    """Item 15: every array was read (2 GB, 10 s) before the parameter-count check; under a
    1.5 GB address-space limit the old code ran out of memory."""
    path = npz_bomb(tmp_path, 1 << 29)                      # 2 GiB of float32 declared
    assert path.stat().st_size < 2_000_000                  # the micro model's own 1.1 MB
    for call in ("from miniclip.checkpoint import model_from_checkpoint\nmodel_from_checkpoint",
                 "from miniclip.pretrained import load\nload"):
        output, seconds = run_limited(f"{call}({str(path)!r})", limit=1536 << 20)
        assert_refused(output, seconds, path, "visual.proj")
        assert seconds < 5, output


def test_npz_declared_sizes_are_read_from_the_headers_alone(tmp_path):
    from miniclip.formats.npz import npz_declared
    path = npz_bomb(tmp_path, 1 << 29)
    shape, dtype = npz_declared(path)["param/visual.proj"]
    assert shape == (1 << 29,) and dtype == np.float32


def test_load_checkpoint_refuses_weights_over_max_weights(tmp_path):
    """load_checkpoint(max_weights=) refuses from the headers a file whose weights declare
    more numbers than the caller expects (--resume: twice its model), and reads one within."""
    from miniclip.checkpoint import load_checkpoint
    path = tmp_path / "small.npz"
    np.savez(path, **{"param/a": np.zeros((3, 4), np.float32), "param/b": np.zeros(5, np.float32)})
    assert set(load_checkpoint(path, max_weights=17)["params"]) == {"a", "b"}
    with pytest.raises(ValueError, match="declare 17 numbers, at most 16"):
        load_checkpoint(path, max_weights=16)
