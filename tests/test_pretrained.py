"""Reading and writing pretrained weights without torch (miniclip/pretrained.py).

The fixtures in $MINICLIP_FIXTURES/openai_tiny were written by torch and
transformers; reference.npz holds the same weights (param/<name>, float64).
Small archives are also built here by hand, byte by byte, to test what the
fixtures do not have (other storage types, strided views, hostile pickles).
"""
import json
import os
import shutil
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from miniclip.pretrained import (
    CheckpointError, available_models, export_hf, hf_to_openai, load_state_dict_any,
    openai_to_hf, read_safetensors, read_torch_checkpoint, write_safetensors,
)
from miniclip import pretrained
from miniclip.formats import torch_archive

from conftest import shared_file

# README of the fixtures: the tensors convert_weights left in float32.
FP32_IN_JIT = {"token_embedding.weight", "positional_embedding", "visual.positional_embedding",
               "visual.class_embedding", "logit_scale"}


def fixture(name):
    return shared_file("fixtures", "openai_tiny", name)


@pytest.fixture(scope="module")
def reference():
    with np.load(fixture("reference.npz"), allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


@pytest.fixture(scope="module")
def params(reference):
    return {k[len("param/"):]: v for k, v in reference.items() if k.startswith("param/")}


@pytest.fixture(scope="module")
def hf_config():
    return json.loads(fixture("hf_config.json").read_text())


def assert_same(state, expected, dtype=None):
    """Same keys; every array equal (exactly) and of `dtype` when given."""
    assert sorted(state) == sorted(expected)
    for name, value in expected.items():
        assert state[name].shape == value.shape, name
        if dtype is not None:
            assert state[name].dtype == dtype, name
        np.testing.assert_array_equal(state[name], value, err_msg=name)


# ---- building torch-format zips by hand (pickle protocol 2 opcodes) ---------

def op_str(s):
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data       # BINUNICODE


def op_int(n):
    return b"J" + struct.pack("<i", n)                      # BININT


def op_tuple(items):
    return b"(" + b"".join(items) + b"t"                    # MARK ... TUPLE


def op_global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()            # GLOBAL


def tensor_pickle(storage_type, key, numel, offset, size, stride):
    """The opcodes of _rebuild_tensor_v2(<persistent storage>, offset, size, stride, False, OrderedDict())."""
    storage = op_tuple([op_str("storage"), op_global("torch", storage_type), op_str(key),
                        op_str("cpu"), op_int(numel)]) + b"Q"   # BINPERSID
    args = op_tuple([storage, op_int(offset), op_tuple(map(op_int, size)), op_tuple(map(op_int, stride)),
                     b"\x89", op_global("collections", "OrderedDict") + b")R"])
    return op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_dict_pickle(tensors):
    """tensors: {name: (storage_type, key, numel, offset, size, stride)} -> an OrderedDict pickle."""
    body = b"".join(op_str(name) + tensor_pickle(*spec) for name, spec in tensors.items())
    return b"\x80\x02" + op_global("collections", "OrderedDict") + b")R(" + body + b"u."


def write_torch_zip(path, data_pkl, storages, top="archive"):
    """A zip laid out like torch.save's: top/data.pkl, top/byteorder, top/data/<key>."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{top}/data.pkl", data_pkl)
        z.writestr(f"{top}/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"{top}/data/{key}", raw)
    return path


def save_arrays(path, arrays):
    """torch.save-like archive of {name: float32/float16/int64 array}, one storage each."""
    types = {"float16": "HalfStorage", "float32": "FloatStorage", "float64": "DoubleStorage",
             "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage"}
    specs, storages = {}, {}
    for i, (name, a) in enumerate(arrays.items()):
        stride = tuple(s // a.itemsize for s in a.strides)
        specs[name] = (types[a.dtype.name], str(i), a.size, 0, a.shape, stride)
        storages[str(i)] = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
    return write_torch_zip(path, state_dict_pickle(specs), storages)


# ---- the fixtures -------------------------------------------------------------

def test_state_dict_pt_gives_the_reference_weights(params):
    state = read_torch_checkpoint(fixture("state_dict.pt"))
    assert len(state) == 62
    assert_same(state, {k: v.astype(np.float32) for k, v in params.items()}, dtype=np.float32)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in state.values())


def test_jit_fp16_pt_gives_the_converted_weights(params):
    state = read_torch_checkpoint(fixture("jit_fp16.pt"))
    extras = {"input_resolution": 32, "context_length": 16, "vocab_size": 1000}
    assert sorted(state) == sorted(list(params) + list(extras))
    for name, value in extras.items():
        assert state[name].dtype == np.int64 and state[name].shape == () and state[name] == value
    for name, value in params.items():
        fp32 = name in FP32_IN_JIT or ".ln_" in name or name.startswith(("ln_", "visual.ln_"))
        dtype = np.float32 if fp32 else np.float16
        assert state[name].dtype == dtype, name
        np.testing.assert_array_equal(state[name], value.astype(dtype), err_msg=name)


def test_hf_safetensors_maps_to_the_reference_weights(params, hf_config):
    hf = read_safetensors(fixture("model.safetensors"))
    assert "vision_model.pre_layrnorm.weight" in hf
    state = hf_to_openai(hf, hf_config)
    assert_same(state, params, dtype=np.float32)


def test_openai_to_hf_inverts_hf_to_openai(hf_config):
    hf = read_safetensors(fixture("model.safetensors"))
    assert_same(openai_to_hf(hf_to_openai(hf, hf_config)), hf, dtype=np.float32)


def test_openai_to_hf_splits_in_proj_and_transposes_projections():
    state = read_torch_checkpoint(fixture("state_dict.pt"))
    hf = openai_to_hf(state)
    w = state["visual.transformer.resblocks.1.attn.in_proj_weight"]          # (3W, W)
    width = w.shape[1]
    for i, part in enumerate("qkv"):
        np.testing.assert_array_equal(hf[f"vision_model.encoder.layers.1.self_attn.{part}_proj.weight"],
                                      w[i * width:(i + 1) * width])
    np.testing.assert_array_equal(hf["text_projection.weight"], state["text_projection"].T)
    np.testing.assert_array_equal(hf["visual_projection.weight"], state["visual.proj"].T)
    assert len(hf) == 62 + 2 * 2 * 2 * 2                     # in_proj weight/bias -> 3 each, 4 blocks


def test_hf_to_openai_ignores_position_ids_and_names_unknown_keys(hf_config, params):
    hf = read_safetensors(fixture("model.safetensors"))
    hf["text_model.embeddings.position_ids"] = np.arange(16)[None]
    hf["vision_model.embeddings.position_ids"] = np.arange(17)[None]
    assert sorted(hf_to_openai(hf, hf_config)) == sorted(params)
    with pytest.raises(CheckpointError, match="text_model.pooler.weight"):
        hf_to_openai(dict(hf, **{"text_model.pooler.weight": np.zeros(3)}), hf_config)
    del hf["text_model.encoder.layers.0.self_attn.k_proj.bias"]
    with pytest.raises(CheckpointError, match="in_proj_bias"):
        hf_to_openai(hf, hf_config)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["vision_config"].update(hidden_act="gelu_new"), "'quick_gelu'.*'gelu'"),
    (lambda c: c["text_config"].update(hidden_act="gelu"), "one activation"),
    (lambda c: c["text_config"].update(layer_norm_eps=1e-6), "one eps"),
    (lambda c: c.update(model_type="siglip"), "model_type 'siglip'"),
])
def test_hf_config_that_miniclip_cannot_run_is_refused(hf_config, edit, message):
    config = json.loads(json.dumps(hf_config))
    edit(config)
    with pytest.raises(CheckpointError, match=message):
        hf_to_openai(read_safetensors(fixture("model.safetensors")), config)


def test_hf_config_is_honoured(hf_config, params):
    from miniclip.pretrained import config_from_hf
    config = json.loads(json.dumps(hf_config))
    for tower in ("text_config", "vision_config"):
        config[tower].update(hidden_act="gelu", layer_norm_eps=1e-6)
    config["vision_config"]["num_attention_heads"] = 4
    config["text_config"]["eos_token_id"] = 2
    c = config_from_hf(config, params)
    assert (c.activation, c.layer_norm_eps, c.num_vision_heads, c.transformer_heads, c.eos_token_id) == \
        ("gelu", 1e-6, 4, 1, None)
    config["text_config"]["eos_token_id"] = 999                  # pools at the first 999, as HF does
    assert config_from_hf(config, params).eos_token_id == 999
    config["vision_config"]["intermediate_size"] = 500
    with pytest.raises(CheckpointError, match="intermediate_size is 500.*512"):
        config_from_hf(config, params)


# ---- safetensors ------------------------------------------------------------------

def test_safetensors_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f16": rng.standard_normal((3, 5)).astype(np.float16),
        "f32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "f64 scalar": np.array(np.pi),
        "f32 scalar": np.array(2.5, dtype=np.float32),
        "i64": np.arange(-3, 4, dtype=np.int64),
        "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
        "u8": np.arange(250, 256, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 4), np.float32),
        "transposed": rng.standard_normal((4, 3)).astype(np.float32).T,   # not contiguous
    }
    path = tmp_path / "t.safetensors"
    write_safetensors(path, tensors, metadata={"format": "pt"})
    back = read_safetensors(path)
    assert_same(back, tensors)
    assert all(back[k].dtype == v.dtype for k, v in tensors.items())
    raw = path.read_bytes()
    header_size = int.from_bytes(raw[:8], "little")
    assert (8 + header_size) % 8 == 0
    header = json.loads(raw[8:8 + header_size])
    assert header["__metadata__"] == {"format": "pt"}
    assert list(header)[1:] == sorted(tensors)
    assert header["f64 scalar"] == {"dtype": "F64", "shape": [], "data_offsets": header["f64 scalar"]["data_offsets"]}
    assert os.listdir(tmp_path) == ["t.safetensors"]          # no temporary left behind


def test_safetensors_bf16_is_widened_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)   # exact in bfloat16
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bits.tobytes())
    x = read_safetensors(path)["x"]
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, values.reshape(2, 2))


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    raw = fixture("model.safetensors").read_bytes()
    for size in (4, 100, len(raw) - 10):
        path = tmp_path / f"cut{size}.safetensors"
        path.write_bytes(raw[:size])
        with pytest.raises(CheckpointError, match="truncated"):
            read_safetensors(path)


# ---- export to Hugging Face -----------------------------------------------------------

def test_export_hf_writes_what_the_fixture_holds(tmp_path, hf_config):
    state = read_torch_checkpoint(fixture("state_dict.pt"))

    class Model:  # anything with .state_dict()
        def state_dict(self):
            return state

    for source in (state, Model()):
        folder = tmp_path / type(source).__name__
        with pytest.warns(UserWarning, match="no tokenizer files"):      # 1000 ids: whose tokenizer?
            export_hf(source, folder)
        assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "preprocessor_config.json"]
        hf = read_safetensors(folder / "model.safetensors")
        assert_same(hf, read_safetensors(fixture("model.safetensors")), dtype=np.float32)
        config = json.loads((folder / "config.json").read_text())
        expected = json.loads(json.dumps({k: v for k, v in hf_config.items() if k != "transformers_version"}))
        expected["text_config"]["eos_token_id"] = 2     # HF's legacy rule: pool at the largest id, as miniclip
        assert config == expected
        assert_same(load_state_dict_any(folder), state, dtype=np.float32)


def test_export_hf_drops_the_int_keys_and_writes_float32(tmp_path, params):
    state = read_torch_checkpoint(fixture("jit_fp16.pt"))
    with pytest.warns(UserWarning, match="tokenizer"):
        export_hf(state, tmp_path)
    back = load_state_dict_any(tmp_path)
    assert sorted(back) == sorted(params)
    assert all(a.dtype == np.float32 for a in back.values())
    np.testing.assert_array_equal(back["visual.proj"], state["visual.proj"].astype(np.float32))


# ---- hand-built torch archives ---------------------------------------------------------

def test_storage_types_views_and_offsets(tmp_path):
    rng = np.random.default_rng(1)
    d = rng.standard_normal(12)
    bf16_values = np.array([1.5, -0.25, 7.0], np.float32)
    storages = {
        "0": d.astype("<f8").tobytes(),
        "1": np.arange(-5, 5, dtype="<i4").tobytes(),
        "2": np.arange(200, 206, dtype="u1").tobytes(),
        "3": (bf16_values.view(np.uint32) >> 16).astype("<u2").tobytes(),
        "4": np.arange(7, dtype="<i8").tobytes(),
    }
    specs = {
        "double": ("DoubleStorage", "0", 12, 0, (3, 4), (4, 1)),
        "double.T": ("DoubleStorage", "0", 12, 0, (4, 3), (1, 4)),        # transposed view
        "double.tail": ("DoubleStorage", "0", 12, 6, (2, 2), (3, 1)),     # offset + gaps
        "int": ("IntStorage", "1", 10, 0, (10,), (1,)),
        "byte": ("ByteStorage", "2", 6, 0, (2, 3), (3, 1)),
        "bf16": ("BFloat16Storage", "3", 3, 0, (3,), (1,)),
        "long.scalar": ("LongStorage", "4", 7, 5, (), ()),
        "long.empty": ("LongStorage", "4", 7, 0, (0, 2), (2, 1)),
    }
    path = write_torch_zip(tmp_path / "a.pt", state_dict_pickle(specs), storages, top="some_other_name")
    state = read_torch_checkpoint(path)
    assert list(state) == list(specs)
    grid = d.reshape(3, 4)
    expected = {
        "double": grid, "double.T": grid.T, "double.tail": d[[[6, 7], [9, 10]]],
        "int": np.arange(-5, 5, dtype=np.int32), "byte": np.arange(200, 206, dtype=np.uint8).reshape(2, 3),
        "bf16": bf16_values, "long.scalar": np.array(5), "long.empty": np.zeros((0, 2), np.int64),
    }
    for name, value in expected.items():
        assert state[name].dtype == value.dtype and state[name].shape == value.shape, name
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in state.values())
    state["double"][0, 0] = 123.0                       # copies: no view shares memory with another
    assert state["double.T"][0, 0] == d[0]


def test_a_view_past_the_end_of_its_storage_is_refused(tmp_path):
    specs = {"x": ("FloatStorage", "0", 4, 2, (2, 2), (2, 1))}        # needs element 5 of 4
    path = write_torch_zip(tmp_path / "x.pt", state_dict_pickle(specs), {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(CheckpointError, match="reaches element 5 of a storage of 4"):
        read_torch_checkpoint(path)


def test_a_missing_storage_entry_is_named(tmp_path):
    specs = {"a": ("FloatStorage", "0", 2, 0, (2,), (1,)), "b": ("FloatStorage", "1", 2, 0, (2,), (1,))}
    path = write_torch_zip(tmp_path / "m.pt", state_dict_pickle(specs), {"0": np.zeros(2, "<f4").tobytes()})
    with pytest.raises(CheckpointError, match=r"no entry 'archive/data/1'"):
        read_torch_checkpoint(path)


def evil_pickles(target):
    """Pickles that would create `target` if a plain pickle.load ran them."""
    call_os_system = (b"\x80\x02" + op_global("os", "system") + op_tuple([op_str(f"touch {target}")])
                      + b"R.")
    call_open = (b"\x80\x02" + op_global("builtins", "open") + op_tuple([op_str(str(target)), op_str("w")])
                 + b"R.")
    # protocol 4 spelling: STACK_GLOBAL takes module and name from the stack
    stack_global = (b"\x80\x04" + b"\x8c\x05posix" + b"\x8c\x06system" + b"\x93"
                    + op_tuple([op_str(f"touch {target}")]) + b"R.")
    # the dangerous call hidden inside an otherwise ordinary state dict
    nested = (b"\x80\x02" + op_global("collections", "OrderedDict") + b")R(" + op_str("w")
              + op_global("os", "system") + op_tuple([op_str(f"touch {target}")]) + b"Ru.")
    return {"os.system": call_os_system, "builtins.open": call_open, "posix.system": stack_global,
            "os.system nested": nested}


@pytest.mark.parametrize("case", ["os.system", "builtins.open", "posix.system", "os.system nested"])
def test_a_pickle_naming_another_global_is_refused_without_running(tmp_path, case):
    target = tmp_path / "pwned"
    data_pkl = evil_pickles(target)[case]
    path = write_torch_zip(tmp_path / "evil.pt", data_pkl, {})
    glob = case.split()[0]
    with pytest.raises(CheckpointError, match=f"refused to load global '{glob}'"):
        read_torch_checkpoint(path)
    assert not target.exists()


def test_a_torchscript_module_tree_gives_dotted_names(tmp_path):
    """Modules are NEWOBJ + BUILD(attribute dict); own tensors first, then submodules'."""
    def module(cls, attributes):
        items = b"".join(op_str(k) + v for k, v in attributes.items())
        return op_global("__torch__.m", cls) + b")\x81}(" + items + b"ub"   # NEWOBJ, SETITEMS, BUILD

    def tensor(key):
        return tensor_pickle("FloatStorage", key, 2, 0, (2,), (1,))

    leaf = module("Leaf", {"training": b"\x89", "bias": tensor("2"), "weight": b"N"})
    data_pkl = b"\x80\x02" + module("Root", {"training": b"\x88", "w": tensor("0"), "sub": leaf,
                                                "steps": op_int(3), "z": tensor("1")}) + b"."
    storages = {k: np.array([int(k), 10], "<f4").tobytes() for k in "012"}
    state = read_torch_checkpoint(write_torch_zip(tmp_path / "s.pt", data_pkl, storages))
    assert list(state) == ["w", "z", "sub.bias"]
    np.testing.assert_array_equal(state["sub.bias"], [2, 10])


def test_a_truncated_archive_is_a_clear_error(tmp_path):
    raw = fixture("state_dict.pt").read_bytes()
    for size in (100, len(raw) // 2, len(raw) - 30):
        path = tmp_path / f"cut{size}.pt"
        path.write_bytes(raw[:size])
        with pytest.raises(CheckpointError, match=f"{path.name}.*truncated"):
            read_torch_checkpoint(path)


def test_a_damaged_storage_is_a_clear_error(tmp_path):
    raw = bytearray(fixture("state_dict.pt").read_bytes())
    start = raw.find(b"state_dict/data/9") + len("state_dict/data/9") + 200   # inside the data of entry 9
    raw[start:start + 8] = b"\xff" * 8
    path = tmp_path / "bitrot.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="bitrot.pt is damaged.*CRC"):
        read_torch_checkpoint(path)


def test_files_that_are_not_torch_zips_are_named(tmp_path):
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(CheckpointError, match="random.pt is not a PyTorch checkpoint"):
        read_torch_checkpoint(random_bytes)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(torch_archive.LEGACY_TORCH_MAGIC + b"q\x00.")
    with pytest.raises(CheckpointError, match="legacy.pt is a legacy"):
        read_torch_checkpoint(legacy)
    npz = tmp_path / "arrays.pt"
    with open(npz, "wb") as f:
        np.savez(f, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="holds no data.pkl"):
        read_torch_checkpoint(npz)
    with pytest.raises(FileNotFoundError):
        read_torch_checkpoint(tmp_path / "nothing.pt")


# ---- load_state_dict_any and the name -> file step of load() -----------------------------

def test_load_state_dict_any_reads_every_format(tmp_path, params):
    fp32 = {k: v.astype(np.float32) for k, v in params.items()}
    assert_same(load_state_dict_any(fixture("state_dict.pt")), fp32)
    assert "input_resolution" in load_state_dict_any(fixture("jit_fp16.pt"))
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(fixture("model.safetensors"), folder / "model.safetensors")
    assert_same(load_state_dict_any(folder / "model.safetensors"), fp32)   # no config.json: no checks
    shutil.copy(fixture("hf_config.json"), folder / "config.json")
    assert_same(load_state_dict_any(folder), fp32)
    assert_same(load_state_dict_any(fixture("reference.npz")), params, dtype=np.float64)
    hand_made = save_arrays(tmp_path / "small.bin", {"a": np.arange(6, dtype=np.float32).reshape(2, 3)})
    np.testing.assert_array_equal(load_state_dict_any(hand_made)["a"], np.arange(6).reshape(2, 3))
    with pytest.raises(FileNotFoundError, match="looked for model.safetensors, model.safetensors.index.json, "
                                                "pytorch_model.bin, pytorch_model.bin.index.json"):
        load_state_dict_any(tmp_path)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(CheckpointError, match="param/"):
        load_state_dict_any(tmp_path / "other.npz")
    (tmp_path / "cut.npz").write_bytes(fixture("reference.npz").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.npz .*truncated"):
        load_state_dict_any(tmp_path / "cut.npz")


def test_model_names_and_their_errors():
    assert available_models() == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
                                  "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
    with pytest.raises(FileNotFoundError, match="ViT-B/32"):
        pretrained.load("ViT-B/31")


def test_a_model_name_is_looked_up_in_assets_then_cache_then_downloaded(tmp_path, monkeypatch):
    calls = []
    assets = {"ViT-B-16.pt": str(tmp_path / "assets" / "ViT-B-16.pt")}
    monkeypatch.setattr(pretrained, "find_asset", lambda filename: assets.get(filename))
    monkeypatch.setattr(pretrained, "cache_dir", lambda: str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "download", lambda url, dest, sha256=None: calls.append((url, dest, sha256)))
    assert pretrained._checkpoint_path("ViT-B/16") == assets["ViT-B-16.pt"]
    assert calls == []
    dest = pretrained._checkpoint_path("ViT-L/14@336px")
    assert dest == str(tmp_path / "cache" / "ViT-L-14-336px.pt")
    assert calls == [("https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
                      dest, "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02")]
    os.makedirs(tmp_path / "cache")
    Path(dest).write_bytes(b"cached")
    assert pretrained._checkpoint_path("ViT-L/14@336px") == dest and len(calls) == 1


def test_a_model_name_found_in_miniclip_assets(tmp_path, monkeypatch):
    shutil.copy(fixture("jit_fp16.pt"), tmp_path / "ViT-B-32.pt")
    monkeypatch.setenv("MINICLIP_ASSETS", str(tmp_path))
    path = pretrained._checkpoint_path("ViT-B/32")
    assert Path(path) == tmp_path / "ViT-B-32.pt"
    assert load_state_dict_any(path)["input_resolution"] == 32


# ---- the model ----------------------------------

def clip_class():
    from miniclip.model import CLIP
    return CLIP


def forward(model, reference):
    logits_per_image, logits_per_text = model(reference["images"], reference["text"])
    image_features = model.encode_image(reference["images"])
    text_features = model.encode_text(reference["text"])
    return {"logits_per_image": logits_per_image.data, "logits_per_text": logits_per_text.data,
            "image_features": image_features.data, "text_features": text_features.data}


@pytest.mark.parametrize("filename", ["state_dict.pt", "model.safetensors"])
def test_the_loaded_model_reproduces_openai_in_float64(tmp_path, reference, filename):
    CLIP = clip_class()
    path = fixture(filename)
    if filename == "model.safetensors":
        shutil.copy(path, tmp_path / "model.safetensors")
        shutil.copy(fixture("hf_config.json"), tmp_path / "config.json")
        path = tmp_path
    model = CLIP.from_state_dict(load_state_dict_any(path), dtype=np.float64)
    for name, value in forward(model, reference).items():
        np.testing.assert_allclose(value, reference[name], rtol=0, atol=1e-10, err_msg=name)


def test_the_fp16_archive_reproduces_the_fp16_references(reference):
    CLIP = clip_class()
    model = CLIP.from_state_dict(read_torch_checkpoint(fixture("jit_fp16.pt")), dtype=np.float64)
    assert model.config.image_resolution == 32 and model.config.vocab_size == 1000
    for name, value in forward(model, reference).items():
        np.testing.assert_allclose(value, reference["fp16w/" + name], rtol=0, atol=1e-10, err_msg=name)
        assert np.abs(value - reference[name]).max() > 1e-6    # it really used the fp16 weights


def test_load_returns_a_float32_model_and_its_preprocess(reference):
    clip_class()
    model, preprocess = pretrained.load(str(fixture("jit_fp16.pt")), device="cpu")
    assert all(v.dtype == np.float32 for v in model.state_dict().values())
    logits = forward(model, reference)["logits_per_image"]
    np.testing.assert_allclose(logits, reference["fp16w/logits_per_image"], atol=1e-4)
    from PIL import Image
    image = preprocess(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert image.shape == (3, 32, 32) and image.dtype == np.float32


def test_a_wrong_shaped_tensor_is_named_with_both_shapes(params):
    CLIP = clip_class()
    state = dict(params)
    state["visual.transformer.resblocks.1.mlp.c_fc.bias"] = np.zeros(511)
    with pytest.raises(Exception) as info:
        CLIP.from_state_dict(state, dtype=np.float64)
    message = str(info.value)
    assert "visual.transformer.resblocks.1.mlp.c_fc.bias" in message
    assert "511" in message and "512" in message


# ---- writing torch's format (the way out to PyTorch) ---------------------------------

def _pickle_globals(data_pkl):
    import pickletools
    return {arg for op, arg, _ in pickletools.genops(data_pkl) if op.name == "GLOBAL"}


def test_save_torch_state_dict_reads_back_exactly(tmp_path):
    from miniclip.model import CLIP
    from miniclip.pretrained import save_torch_state_dict
    model = CLIP("micro", seed=1)
    path = save_torch_state_dict(model, tmp_path / "micro.pt")
    state, expected = read_torch_checkpoint(path), model.state_dict()
    assert list(state) == list(expected)                       # names and order
    for name, value in expected.items():
        assert state[name].dtype == value.dtype and state[name].shape == value.shape, name
        assert np.array_equal(state[name], value), name
    assert state["logit_scale"].shape == ()                    # 0-d, as OpenAI's
    with zipfile.ZipFile(path) as archive:
        raw = open(path, "rb").read()
        for info in archive.infolist():                        # torch's 64-byte alignment
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename
            assert info.compress_type == zipfile.ZIP_STORED
        storage_bytes = [archive.read(f"archive/data/{i}") for i in range(len(expected))]
        assert archive.read("archive/byteorder") == b"little"
        assert archive.read("archive/version") == b"3\n"
        globals_named = _pickle_globals(archive.read("archive/data.pkl"))
    assert storage_bytes == [v.astype(v.dtype.newbyteorder("<")).tobytes() for v in expected.values()]
    assert globals_named == {"collections OrderedDict", "torch._utils _rebuild_tensor_v2",
                             "torch FloatStorage"}
    loaded, _ = pretrained.load(str(path), device="cpu")
    assert loaded.config == model.config


def test_save_torch_state_dict_names_what_torch_itself_names(tmp_path, params):
    """The fixture state_dict.pt was written by torch.save: our pickle names the same globals."""
    from miniclip.pretrained import save_torch_state_dict
    with zipfile.ZipFile(fixture("state_dict.pt")) as archive:
        torch_globals = _pickle_globals(archive.read(_data_pkl_name(archive)))
    path = save_torch_state_dict({k: v.astype(np.float32) for k, v in params.items()},
                                 tmp_path / "tiny.pt")
    with zipfile.ZipFile(path) as archive:
        assert _pickle_globals(archive.read("archive/data.pkl")) == torch_globals
    assert_same(read_torch_checkpoint(path), {k: v.astype(np.float32) for k, v in params.items()},
                dtype=np.float32)


def _data_pkl_name(archive):
    return next(n for n in archive.namelist() if n.endswith("/data.pkl"))


@pytest.mark.parametrize("dtype, storage", [(np.float64, "DoubleStorage"), (np.float16, "HalfStorage"),
                                            (np.int64, "LongStorage")])
def test_save_torch_state_dict_keeps_the_dtype(tmp_path, dtype, storage):
    from miniclip.pretrained import save_torch_state_dict
    state = {"a": np.arange(6, dtype=dtype).reshape(2, 3), "b": np.array(2, dtype=dtype)}
    path = save_torch_state_dict(state, tmp_path / "x.pt")
    back = read_torch_checkpoint(path)
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in state.items())
    with zipfile.ZipFile(path) as archive:
        assert f"torch {storage}" in _pickle_globals(archive.read("archive/data.pkl"))


def test_save_torch_state_dict_refuses_a_dtype_torch_cannot_hold(tmp_path):
    from miniclip.pretrained import save_torch_state_dict
    with pytest.raises(ValueError, match="'x' is complex128"):
        save_torch_state_dict({"x": np.zeros(2, dtype=np.complex128)}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
