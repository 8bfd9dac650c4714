"""No silently wrong number (issue 11): configs honoured on load, exported
folders that compute what miniclip computes, refusals for what it cannot.

No torch, no transformers: Hugging Face's rules (pooling, tokenizer files) are
re-implemented here in a few lines and checked against miniclip's output.
"""
import dataclasses
import html
import json
import os
import shutil
import warnings

import ftfy
import numpy as np
import pytest
import regex

from miniclip import pretrained
from miniclip.config import CLIPConfig, get_config
from miniclip.model import CLIP
from miniclip.pretrained import (
    CheckpointError, check_supported, export_hf, load, load_state_dict_any, read_safetensors,
    write_safetensors)
from miniclip.tokenizer import SOT_TEXT, EOT_TEXT, Tokenizer, tokenize
from conftest import shared_file
from miniclip.tokenizer import OPENAI_NUM_MERGES
from test_pretrained import fixture, save_arrays
from test_tokenizer import openai_style_bpe


def openai_tokenizer():
    return Tokenizer.from_file(shared_file("assets", "bpe_simple_vocab_16e6.txt.gz"), num_merges=OPENAI_NUM_MERGES)

# GELU, 4 heads of 8 (not 64-wide), MLP widths not 4W, eps 1e-6: nothing OpenAI's defaults guess
ODD = CLIPConfig(embed_dim=16, image_resolution=16, vision_layers=2, vision_width=32, vision_patch_size=8,
                 context_length=12, vocab_size=986, transformer_width=32, transformer_heads=4,
                 transformer_layers=2, vision_heads=4, activation="gelu", vision_mlp_width=48,
                 transformer_mlp_width=80, layer_norm_eps=1e-6)


def inputs(config, n=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 3, config.image_resolution, config.image_resolution)).astype(np.float32)
    ids = tokenize(["a red circle", "two blue squares", "a photo"], context_length=config.context_length,
                   tokenizer=Tokenizer.default())
    return images, ids


def outputs(model, images, ids):
    logits, _ = model(images, ids)
    return model.encode_image(images).data, model.encode_text(ids).data, logits.data


def scrambled(config, seed=1):
    """A model with every weight random (LayerNorms and biases too), so nothing cancels."""
    model = CLIP(config, seed=seed)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.2 + (0.5 if p.ndim == 1 else 0)
    return model


def test_a_gelu_non_64_head_model_round_trips_through_export_hf(tmp_path):
    model = scrambled(ODD)
    folder = export_hf(model, tmp_path / "hf")
    assert folder == str(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    assert (text["num_attention_heads"], vision["num_attention_heads"]) == (4, 4)
    assert (text["hidden_act"], vision["hidden_act"]) == ("gelu", "gelu")
    assert (text["intermediate_size"], vision["intermediate_size"]) == (80, 48)
    assert text["layer_norm_eps"] == vision["layer_norm_eps"] == 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # a folder with its config: no warning
        loaded, _ = load(folder, device="cpu")
    assert loaded.config == ODD
    images, ids = inputs(ODD)
    for a, b in zip(outputs(model, images, ids), outputs(loaded, images, ids)):
        np.testing.assert_array_equal(a, b)


def test_the_same_weights_without_config_warn_and_name_the_assumptions(tmp_path):
    model = scrambled(dataclasses.replace(ODD, transformer_mlp_width=None, vision_mlp_width=None,
                                          layer_norm_eps=1e-5))
    path = tmp_path / "weights.safetensors"
    write_safetensors(path, model.state_dict())
    with pytest.warns(UserWarning) as record:
        guessed, _ = load(path, device="cpu")
    assert len(record) == 1
    message = str(record[0].message)
    assert "QuickGELU" in message and "64-wide" in message and "config=" in message
    assert guessed.config.activation == "quick_gelu" and guessed.config.num_vision_heads == 1
    images, ids = inputs(ODD)
    assert np.abs(outputs(guessed, images, ids)[0] - outputs(model, images, ids)[0]).max() > 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        right, _ = load(path, device="cpu", config=model.config)
    np.testing.assert_array_equal(outputs(right, images, ids)[0], outputs(model, images, ids)[0])


def test_torchscript_archives_are_openais_and_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, _ = load(str(fixture("jit_fp16.pt")), device="cpu")
    assert model.config.activation == "quick_gelu"


def test_a_config_the_weights_contradict_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, scrambled(ODD).state_dict())
    with pytest.raises(Exception, match="mlp.c_fc.weight"):
        load(path, device="cpu", config=dataclasses.replace(ODD, vision_mlp_width=64))
    with pytest.raises(Exception, match="resblocks.2"):
        load(path, device="cpu", config=dataclasses.replace(ODD, vision_layers=3))


def test_openclip_architecture_names_carry_openclips_facts():
    b32, h14, g14 = get_config("ViT-B-32"), get_config("ViT-H-14"), get_config("ViT-g-14")
    assert b32.activation == "gelu" and get_config("ViT-B-32-quickgelu").activation == "quick_gelu"
    assert get_config("ViT-B-32-quickgelu") == get_config("ViT-B/32")     # OpenAI's, by another name
    assert (h14.vision_width, h14.num_vision_heads, h14.transformer_heads, h14.transformer_layers) == (1280, 16, 16, 24)
    assert (g14.num_vision_heads, g14.vision_mlp, get_config("ViT-bigG-14").vision_mlp) == (16, 6144, 8192)
    for name in ("ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-g-14"):
        assert get_config(name + "-quickgelu") == dataclasses.replace(get_config(name), activation="quick_gelu")
    with pytest.raises(FileNotFoundError, match="config='ViT-H-14'"):
        load("ViT-H-14")


def openclip_folder(tmp_path, model, model_cfg, weights="open_clip_model.safetensors"):
    folder = tmp_path / "oc"
    folder.mkdir()
    write_safetensors(folder / weights, model.state_dict())
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    return folder


SMALL_OPENCLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "head_width": 16,
                                                  "patch_size": 8, "mlp_ratio": 2.5},
                  "text_cfg": {"context_length": 12, "vocab_size": 986, "width": 32, "heads": 2, "layers": 2}}


def test_an_openclip_folder_is_read_for_its_model_cfg(tmp_path):
    config = dataclasses.replace(ODD, vision_heads=2, transformer_heads=2, vision_mlp_width=80,
                                 transformer_mlp_width=None, layer_norm_eps=1e-5)
    model = scrambled(config)
    folder = openclip_folder(tmp_path, model, SMALL_OPENCLIP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, preprocess = load(folder, device="cpu")
    assert loaded.config == config
    np.testing.assert_array_equal(preprocess.mean, np.float32([0.5] * 3))
    images, ids = inputs(config)
    np.testing.assert_array_equal(outputs(loaded, images, ids)[2], outputs(model, images, ids)[2])


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["vision_cfg"].update(attentional_pool=True), "attentional_pool"),
    (lambda c: c.update(multimodal_cfg={"width": 32}), "multimodal_cfg"),
    (lambda c: c["vision_cfg"].update(ls_init_value=0.1), "ls_init_value"),
    (lambda c: c["text_cfg"].update(hf_model_name="roberta-base"), "hf_model_name"),
    (lambda c: c["vision_cfg"].update(no_ln_pre=True), "no_ln_pre"),
    (lambda c: c["text_cfg"].update(pool_type="last"), "pool_type"),
    (lambda c: c["vision_cfg"].update(layers=[3, 4, 6, 3]), "ResNet"),
    (lambda c: c["vision_cfg"].update(new_thing=1), "new_thing"),
])
def test_openclip_structures_miniclip_cannot_compute_are_refused(tmp_path, edit, message):
    cfg = json.loads(json.dumps(SMALL_OPENCLIP))
    edit(cfg)
    folder = openclip_folder(tmp_path, scrambled(ODD), cfg)
    with pytest.raises(ValueError, match=message):
        load(folder, device="cpu")


@pytest.mark.parametrize("extra, message", [
    ({"visual.attn_pool.query": np.zeros((1, 4))}, "attention pooler"),
    ({"transformer.resblocks.0.ls_1.gamma": np.zeros(32)}, "layer scale"),
    ({"text_decoder.resblocks.0.ln_1.weight": np.zeros(32)}, "CoCa"),
])
def test_state_dicts_with_structures_miniclip_cannot_compute_are_refused(tmp_path, extra, message):
    state = {k: v.data for k, v in scrambled(ODD).state_dict().items()} | extra
    with pytest.raises(CheckpointError, match=message):
        check_supported(state)
    write_safetensors(tmp_path / "w.safetensors", state)
    with pytest.raises(CheckpointError, match="refused rather than loaded approximately"):
        load(tmp_path / "w.safetensors", device="cpu", config=ODD)


# ---- the end-of-text rule --------------------------------------------------------------

def hf_pool_positions(ids, eos_token_id):
    """transformers' CLIPTextTransformer: eos_token_id 2 is the legacy rule (argmax of
    the ids), any other id pools at its first occurrence."""
    if eos_token_id == 2:
        return ids.argmax(-1)
    return (ids == eos_token_id).astype(int).argmax(-1)


def test_export_hf_pools_where_miniclip_pools_for_a_larger_vocabulary(tmp_path):
    model = CLIP(get_config("tiny"))                         # 1000 ids; its tokenizer has 986
    tokenizer = Tokenizer.default()
    export_hf(model, tmp_path, tokenizer=tokenizer)
    eos = json.loads((tmp_path / "config.json").read_text())["text_config"]["eos_token_id"]
    ids = tokenize(["a red circle", "a big blue square on the left"], context_length=24, tokenizer=tokenizer)
    np.testing.assert_array_equal(hf_pool_positions(ids, eos), ids.argmax(-1))
    assert ids.argmax(-1).tolist() == [(row == tokenizer.eot_token).argmax() for row in ids]
    # and the old rule (eos = vocab_size - 1 = 999) pooled at position 0: the bug this fixes
    assert hf_pool_positions(ids, 999).tolist() == [0, 0]


def test_an_eos_token_id_in_the_config_pools_at_its_first_occurrence():
    config = dataclasses.replace(get_config("micro"), eos_token_id=5)
    # float64: the fast tier runs the text tower up to the last end token only, which
    # changes float32 rounding (not the value) against this full-length reference
    model = CLIP(config).astype(np.float64)
    ids = np.zeros((2, 16), dtype=np.int64)
    ids[0, :4] = [1, 5, 900, 5]
    ids[1, :3] = [7, 8, 5]
    x = model.token_embedding(ids) + model.positional_embedding
    x = model.transformer(x).data
    expected = model.ln_final(x[[0, 1], [1, 2]]) @ model.text_projection
    np.testing.assert_allclose(model.encode_text(ids).data, expected.data, rtol=1e-6)


# ---- tokenizer and preprocessor files --------------------------------------------------

def hf_bytes_to_unicode():
    """GPT-2's byte -> printable character table, as transformers' CLIPTokenizer builds it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# transformers' CLIPTokenizer.pat
HF_PAT = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                       regex.IGNORECASE)


def hf_style_tokenizer(folder):
    """A pure-Python reader of the exported files, used the way Hugging Face's CLIPTokenizer
    uses them (it shares no code with miniclip's tokenizer):
    - the special tokens of special_tokens_map.json / tokenizer_config.json are cut out of
      the raw text first (HF's added-token split) and each becomes its vocab.json id;
    - each other piece: ftfy + html.unescape twice, whitespace runs -> one space, lower
      case, HF's regex, bytes -> GPT-2 characters, BPE with the ranks of merges.txt (after
      its #version line), then vocab.json (the two start/end strings map to their ids
      directly, as CLIPTokenizer.bpe's cache does)."""
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").strip().split("\n")
    assert lines[0].startswith("#version")
    ranks = {tuple(line.split()): rank for rank, line in enumerate(lines[1:49152 - 256 - 2 + 1])}
    special = json.loads((folder / "special_tokens_map.json").read_text())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    specials = {config[k] for k in special} | set(special.values())
    split = regex.compile("(" + "|".join(regex.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")")
    byte_char = hf_bytes_to_unicode()

    def encode(text):
        ids = []
        for part in split.split(text):
            if part in specials:
                ids.append(vocab[part])
                continue
            part = html.unescape(html.unescape(ftfy.fix_text(part))).strip()
            part = regex.sub(r"\s+", " ", part).strip().lower()
            for piece in HF_PAT.findall(part):
                if piece in ("<|startoftext|>", "<|endoftext|>"):       # CLIPTokenizer.bpe's cache
                    ids.append(vocab[piece])
                    continue
                token = "".join(byte_char[b] for b in piece.encode("utf-8"))
                ids.extend(vocab[symbol] for symbol in openai_style_bpe(ranks, token))
        return ids
    return vocab, ranks, encode


# text where a special token, a contraction, digits or spaces could go wrong
HARD_TEXTS = ["a dog!", "!", "a dog ! and a cat!!", "it's a dog's life, isn't it?", "we'll see 'em",
              "2024 photos of 3 cats, 10 dogs", "a    photo\t of   a dog  ", "  !  ", "route 66!",
              "'", "a photo of a {}.", "<|endoftext|>"]


def test_tokenizer_files_give_miniclips_ids_on_the_fixture_strings(tmp_path):
    cases = [json.loads(line) for line in
             shared_file("fixtures", "tokenizer", "clip_tokenizer_cases.jsonl").read_text().splitlines()]
    for name, tokenizer in (("openai", openai_tokenizer()), ("default", Tokenizer.default())):
        folder = tmp_path / name
        pretrained.write_hf_tokenizer(tokenizer, folder, context_length=77)
        vocab, ranks, encode = hf_style_tokenizer(folder)
        assert len(vocab) == len(tokenizer) and len(ranks) == len(tokenizer.merges)
        for text in [case["text"] for case in cases] + HARD_TEXTS:
            assert encode(text) == tokenizer.encode(text), text
        special = json.loads((folder / "special_tokens_map.json").read_text())
        config = json.loads((folder / "tokenizer_config.json").read_text())
        # OpenAI's own HF folders: <|startoftext|> bos, <|endoftext|> for eos, pad and unk
        assert special == {"bos_token": SOT_TEXT, "eos_token": EOT_TEXT, "pad_token": EOT_TEXT,
                           "unk_token": EOT_TEXT}
        assert vocab[special["pad_token"]] == tokenizer.eot_token
        assert config["tokenizer_class"] == "CLIPTokenizer" and config["model_max_length"] == 77


def test_every_openai_id_round_trips_through_vocab_json_and_merges_txt(tmp_path):
    tokenizer = openai_tokenizer()
    pretrained.write_hf_tokenizer(tokenizer, tmp_path)
    vocab, ranks, _ = hf_style_tokenizer(tmp_path)
    assert len(vocab) == len(tokenizer) == 49408
    assert all(vocab[token] == i for i, token in enumerate(tokenizer.vocab))
    assert sorted(ranks, key=ranks.get) == tokenizer.merges
    assert Tokenizer.from_file(tmp_path / "merges.txt").merges == tokenizer.merges


def test_export_hf_writes_the_processor_files(tmp_path):
    from miniclip.data.transforms import MEAN, STD
    export_hf(CLIP(get_config("micro")), tmp_path, tokenizer=Tokenizer.default())
    assert sorted(os.listdir(tmp_path)) == ["config.json", "merges.txt", "model.safetensors",
                                           "preprocessor_config.json", "special_tokens_map.json",
                                           "tokenizer_config.json", "vocab.json"]
    pre = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert pre["size"] == {"shortest_edge": 32} and pre["crop_size"] == {"height": 32, "width": 32}
    assert pre["image_mean"] == list(MEAN) and pre["image_std"] == list(STD) and pre["resample"] == 3
    with pytest.raises(ValueError, match="not this model's tokenizer"):
        export_hf(CLIP(dataclasses.replace(get_config("micro"), vocab_size=900)), tmp_path / "x",
                  tokenizer=Tokenizer.default())                   # 986 ids


# ---- Hugging Face folders: sharded, .bin ---------------------------------------------

def shard(state, parts):
    names = sorted(state)
    return [{n: state[n] for n in names[i::parts]} for i in range(parts)]


@pytest.mark.parametrize("layout", ["safetensors_sharded", "bin", "bin_sharded"])
def test_sharded_and_bin_hugging_face_folders_load(tmp_path, layout):
    source = tmp_path / "export"
    model = scrambled(ODD)
    export_hf(model, source)
    hf = read_safetensors(source / "model.safetensors")
    folder = tmp_path / layout
    folder.mkdir()
    shutil.copy(source / "config.json", folder / "config.json")
    if layout == "bin":
        save_arrays(folder / "pytorch_model.bin", hf)
    else:
        weight_map = {}
        for i, part in enumerate(shard(hf, 3)):
            ext = "safetensors" if layout == "safetensors_sharded" else "bin"
            name = f"model-{i + 1:05d}-of-00003.{ext}" if ext == "safetensors" else f"pytorch_model-{i + 1:05d}-of-00003.bin"
            (write_safetensors if ext == "safetensors" else save_arrays)(folder / name, part)
            weight_map.update({k: name for k in part})
        index = "model.safetensors.index.json" if layout == "safetensors_sharded" else "pytorch_model.bin.index.json"
        (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded, _ = load(folder, device="cpu")
    assert loaded.config == ODD
    images, ids = inputs(ODD)
    np.testing.assert_array_equal(outputs(loaded, images, ids)[2], outputs(model, images, ids)[2])


def test_a_shard_index_naming_a_missing_shard_is_named(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "nope.safetensors"}}))
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        load_state_dict_any(tmp_path)


def test_load_draws_no_random_weights(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, scrambled(ODD).state_dict())
    import miniclip.model

    def refuse(*args, **kwargs):
        raise AssertionError("load() drew random weights")
    monkeypatch.setattr(miniclip.model.np.random, "default_rng", refuse)
    monkeypatch.setattr(CLIP, "initialize_parameters", refuse)
    model, _ = load(path, device="cpu", config=ODD)
    assert model.config == ODD


def test_read_hf_tokenizer_gives_back_the_exported_tokenizer(tmp_path):
    tokenizer = Tokenizer.default()
    export_hf(CLIP(get_config("micro")), tmp_path, tokenizer=tokenizer)
    for path in (tmp_path, tmp_path / "model.safetensors"):       # the folder, or a file in it
        read = pretrained.read_hf_tokenizer(path)
        assert read.merges == tokenizer.merges
        assert read.encode("a red circle! it's 42") == tokenizer.encode("a red circle! it's 42")
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    vocab["a</w>"], vocab["b</w>"] = vocab["b</w>"], vocab["a</w>"]         # numbered otherwise
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(CheckpointError, match=r"vocab.json: token 'a</w>' has id"):
        pretrained.read_hf_tokenizer(tmp_path)
    (tmp_path / "merges.txt").unlink()
    assert pretrained.read_hf_tokenizer(tmp_path) is None                 # then OpenAI's, as before


def test_zeroshot_on_an_exported_folder_uses_the_folders_tokenizer(tmp_path, capsys):
    """Issue 24: zeroshot ignored the folder's vocab.json/merges.txt and refused the ids."""
    from PIL import Image
    from miniclip.cli import main
    folder = tmp_path / "hf"
    export_hf(CLIP(get_config("micro")), folder, tokenizer=Tokenizer.default())   # 1000 ids, not OpenAI's
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), "red").save(image)
    assert main(["zeroshot", "--checkpoint", str(folder), str(image), "--labels", "red circle,blue square"]) == 0
    out = capsys.readouterr().out
    assert "red circle" in out and "blue square" in out
