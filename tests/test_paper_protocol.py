"""The CLIP paper's zero-shot protocol in one command (`eval --checkpoint NAME --dataset cifar10`),
run on the reference fixtures' tiny model (fixtures/openai_tiny) and a small CIFAR-10 copy:
OpenAI's class names and 18 templates, the ensemble, OpenAI's preprocess, the published figures."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import miniclip
from miniclip import tokenizer as tokenizer_module
from miniclip.cli import main
from miniclip.data import cifar as cifar_module
from miniclip.data.cifar import CIFAR10_CLASSES, TEMPLATES
from miniclip.evaluate import PUBLISHED_ZERO_SHOT, encode_images, zero_shot_classifier
from miniclip.tokenizer import Tokenizer

from conftest import shared_file


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch):
    """A CIFAR-10 image folder with 2 images per class per split, found through MINICLIP_DATA,
    counted as complete."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in CIFAR10_CLASSES:
            folder = tmp_path / "data" / "cifar10-jpeg" / split / cls
            folder.mkdir(parents=True)
            for k in range(2):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    folder / f"{k}.png")
    monkeypatch.setenv("MINICLIP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MINICLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(cifar_module.SPLIT_SIZES, "cifar10", {"train": (20, 2), "test": (20, 2)})


@pytest.fixture
def tiny_vocabulary(monkeypatch):
    """OpenAI's vocabulary cut to the tiny model's 1000 ids (its first 486 merges: start 998,
    end 999, as the fixture's text rows use), standing in for the full one."""
    cut = Tokenizer.from_file(shared_file("assets", "bpe_simple_vocab_16e6.txt.gz"), num_merges=486)
    assert (len(cut), cut.sot_token, cut.eot_token) == (1000, 998, 999)
    monkeypatch.setattr(tokenizer_module, "_openai_tokenizer", lambda: cut)
    return cut


@pytest.fixture
def vit_b_32(tmp_path, monkeypatch):
    """The tiny TorchScript archive under the name of ViT-B/32's file, in MINICLIP_ASSETS."""
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(shared_file("fixtures", "openai_tiny", "jit_fp16.pt"), assets / "ViT-B-32.pt")
    monkeypatch.setenv("MINICLIP_ASSETS", str(assets))


def by_hand(model, cut):
    """Top-1 on the 20 test images, computed without zero_shot_classifier or the CLI."""
    images, labels, _ = cifar_module.load_cifar("cifar10", "test")
    _, preprocess = miniclip.load("ViT-B/32")
    x = np.stack([preprocess(Image.fromarray(np.asarray(image))) for image in images])
    with miniclip.no_grad():
        f = model.encode_image(x).data.astype(np.float64)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        weights = []
        for name in CIFAR10_CLASSES:           # per class: mean of normalised template features
            ids = miniclip.tokenize([t.format(name) for t in TEMPLATES], 16, truncate=True,
                                    tokenizer=cut)
            t = model.encode_text(ids).data.astype(np.float64)
            t /= np.linalg.norm(t, axis=1, keepdims=True)
            mean = t.mean(axis=0)
            weights.append(mean / np.linalg.norm(mean))     # renormalised
    weights = np.stack(weights)
    return weights, float(((f @ weights.T).argmax(axis=1) == labels).mean())


def test_name_runs_the_paper_protocol_and_prints_the_published_figures(
        tiny_cifar10, tiny_vocabulary, vit_b_32, capsys):
    assert main(["eval", "--checkpoint", "ViT-B/32", "--dataset", "cifar10"]) == 0
    out = capsys.readouterr().out
    line = [line for line in out.splitlines() if line.startswith("ViT-B/32 on CIFAR-10")]
    assert len(line) == 1 and line[0].endswith(
        "published top-1: CLIP paper (Table 11) 91.3 %, CLIP_benchmark 89.8 %"), out
    assert "top5" in out and "per class: airplane" in out

    model, _ = miniclip.load("ViT-B/32")
    weights, top1 = by_hand(model, tiny_vocabulary)
    np.testing.assert_allclose(zero_shot_classifier(model, CIFAR10_CLASSES, TEMPLATES),
                               weights, atol=1e-5)
    assert f"top-1 {100 * top1:.2f} %" in line[0]
    assert main(["eval", "--checkpoint", "ViT-B/32", "--dataset", "cifar10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["zero_shot_accuracy"] == pytest.approx(top1)


def test_a_file_has_no_published_figure(tiny_cifar10, tiny_vocabulary, capsys):
    path = shared_file("fixtures", "openai_tiny", "jit_fp16.pt")
    assert main(["eval", "--checkpoint", str(path), "--dataset", "cifar10"]) == 0
    assert f"{path} on CIFAR-10: top-1 " in (out := capsys.readouterr().out)
    assert "no published figure for this model" in out


def test_a_pretrained_model_needs_a_dataset(tiny_vocabulary, vit_b_32, capsys):
    assert main(["eval", "--checkpoint", "ViT-B/32"]) == 2
    assert "not a miniclip run: name the data with --dataset" in capsys.readouterr().err


def test_the_published_table_holds_designs_figures():
    assert PUBLISHED_ZERO_SHOT[("ViT-B/32", "cifar100")] == {"paper": 65.1, "clip_benchmark": 64.2}
    assert PUBLISHED_ZERO_SHOT[("RN50", "cifar10")] == {"paper": 75.6, "clip_benchmark": 71.6}


def test_preprocess_reaches_every_image(monkeypatch):
    """encode_images(preprocess=...) feeds the model what preprocess makes, image by image:
    a 32 x 32 image becomes R x R (here 64: the model sees 64 x 64 inputs)."""
    seen = []

    class Model:
        def parameters(self):
            return iter([miniclip.Tensor(np.zeros(1, np.float32))])

        def encode_image(self, x):
            seen.append(x.shape)
            return miniclip.Tensor(x.reshape(len(x), -1)[:, :4])

    from miniclip.data.transforms import Preprocess
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    encode_images(Model(), images, batch_size=2, preprocess=Preprocess(64))
    assert seen == [(2, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64)]
