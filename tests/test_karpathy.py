"""Several captions per image: the Karpathy-split reader (COCO / Flickr30k retrieval), a CSV
whose image column repeats, one caption drawn per epoch, and `eval --dataset karpathy:PATH`."""
import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from miniclip import tasks
from miniclip.checkpoint import save_checkpoint
from miniclip.cli import main
from miniclip.data import karpathy
from miniclip.data.captions import all_captions, one_caption_each
from miniclip.data.csv import CsvDataset
from miniclip.data.karpathy import KarpathyDataset, read_karpathy
from miniclip.data.loader import DataLoader
from miniclip.data.shapes import ShapesDataset
from miniclip.evaluate import encode_images, encode_texts, recall_at_k
from miniclip.config import get_config
from miniclip.model import CLIP
from miniclip.tokenizer import Tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30), "white": (250, 250, 250), "black": (5, 5, 5)}


def karpathy_files(root, coco=False):
    """A Flickr-style split file (COCO-style with filepath) and the images it names, drawn
    with Pillow: test has 4 images x 5 captions, train 2, restval 1, val 1."""
    images = root / "images"
    entries = []
    plan = [("test", c) for c in ("red", "green", "blue", "yellow")] + \
           [("train", "white"), ("train", "black"), ("restval", "red"), ("val", "blue")]
    for i, (split, colour) in enumerate(plan):
        folder = images / ("val2014" if coco else "")
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.new("RGB", (48, 40), COLOURS[colour])
        picture.paste((0, 0, 0), (10, 10, 20, 20))
        picture.save(folder / f"{i:03d}.jpg")
        entry = {"filename": f"{i:03d}.jpg", "split": split, "imgid": i,
                 "sentences": [{"raw": f"a {colour} picture, take {k}", "tokens": []}
                               for k in range(5)]}
        if coco:
            entry["filepath"] = "val2014"
        entries.append(entry)
    path = root / ("dataset_coco.json" if coco else "dataset_flickr30k.json")
    path.write_text(json.dumps({"images": entries, "dataset": "coco" if coco else "flickr30k"}))
    return path, images


def test_reader_returns_a_split_with_all_its_captions(tmp_path):
    path, _ = karpathy_files(tmp_path)
    test = read_karpathy(path, "test")
    assert [name for name, _ in test] == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    assert test[2][1] == [f"a blue picture, take {k}" for k in range(5)]
    assert [n for n, _ in read_karpathy(path, ("train", "restval"))] == ["004.jpg", "005.jpg",
                                                                           "006.jpg"]


def test_coco_filepath_is_the_sub_folder(tmp_path):
    path, images = karpathy_files(tmp_path, coco=True)
    assert read_karpathy(path, "val")[0][0] == "val2014/007.jpg"
    ds = KarpathyDataset(path, images, "test", image_size=16)
    assert ds.arrays().shape == (4, 16, 16, 3) and ds.arrays().dtype == np.uint8
    assert np.abs(ds.arrays()[0, 0, 0].astype(int) - COLOURS["red"]).max() <= 8   # a corner (JPEG)
    assert len(ds.texts_per_image) == 4 and all(len(t) == 5 for t in ds.texts_per_image)


BAD = {
    "not json": (b'{"images": [', "not valid JSON (Expecting value at line 1 column 13)"),
    "a list": (b"[1, 2]", "no 'images' list at the top"),
    "no images": (b'{"dataset": "coco"}', "no 'images' list at the top"),
    "not an object": (b'{"images": [3]}', "images[0] is int, not an object"),
    "no filename": (b'{"images": [{"split": "test", "sentences": [{"raw": "a"}]}]}',
                    "images[0].filename is missing"),
    "no split": (b'{"images": [{"filename": "a.jpg", "sentences": []}]}', "images[0].split is missing"),
    "no sentences": (b'{"images": [{"filename": "a.jpg", "split": "test", "sentences": []}]}',
                     "images[0] (a.jpg) has no 'sentences' list"),
    "raw not text": (b'{"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"raw": 5}]}]}',
                     "images[0].sentences[0].raw is int, not a string"),
    "escapes": (b'{"images": [{"filename": "../../etc/x.jpg", "split": "test", "sentences": [{"raw": "a"}]}]}',
                "images[0].filename is '../../etc/x.jpg': must be a file name inside the image folder"),
    "no such split": (b'{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a"}]}]}',
                      "no image in split test; the file's splits: train"),
    "not utf-8": (b'{"images": ["\xff"]}', "not a JSON file miniclip reads (not UTF-8 text)"),
    "deep": (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_split_files_are_one_clear_line(tmp_path, case):
    data, expected = BAD[case]
    path = tmp_path / "dataset_flickr30k.json"
    path.write_bytes(data)
    with pytest.raises(ValueError) as err:
        read_karpathy(path, "test")
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_a_fifo_or_a_huge_file_is_refused_unread(tmp_path, monkeypatch):
    fifo = tmp_path / "dataset_coco.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        read_karpathy(fifo, "test")                      # would block forever in open()
    path, _ = karpathy_files(tmp_path / "big")
    monkeypatch.setattr(karpathy, "MAX_JSON_BYTES", 100)
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        read_karpathy(path, "test")


def test_a_missing_image_names_the_entry_and_the_file(tmp_path):
    path, images = karpathy_files(tmp_path)
    (images / "002.jpg").unlink()
    with pytest.raises(ValueError, match=r"dataset_flickr30k.json \(002.jpg\): cannot read the "
                                         r"image .*002.jpg"):
        KarpathyDataset(path, images, "test")
    with pytest.raises(ValueError, match="--images .*: not a folder"):
        KarpathyDataset(path, images / "000.jpg", "test")


def test_one_caption_per_epoch_reproducible_and_resumable(tmp_path):
    path, images = karpathy_files(tmp_path)
    ds = KarpathyDataset(path, images, "test", image_size=16)

    def epoch(seed, e, start=0):
        """{image index: the caption the training loader drew for it} in epoch e."""
        got = []
        loader = DataLoader(ds.arrays(), ds.captions, lambda texts: got.extend(texts) or
                            np.zeros((len(texts), 2)), batch_size=2, seed=seed, prefetch=False)
        indices = [idx for _, _, idx in loader.iter_epoch(e, start_batch=start)]
        return dict(zip(np.concatenate(indices).tolist(), got))

    first = epoch(0, 3)
    assert first == epoch(0, 3)                              # the same seed and epoch: the same draw
    resumed = epoch(0, 3, start=1)                           # resumed at batch 1
    assert all(first[i] == c for i, c in resumed.items())
    for i, caption in first.items():
        assert caption in ds.texts_per_image[i]              # one of that image's own captions
    seen = {c for e in range(40) for c in epoch(0, e).values()}
    assert seen == {c for t in ds.texts_per_image for c in t}  # every caption is drawn in time
    assert any(epoch(0, e) != first for e in range(4))      # and the draw changes with the epoch


def test_loader_draws_one_caption_per_image_through_the_real_batches():
    texts = [["a", "b", "c"], ["d"], ["e", "f"], ["g", "h", "i", "j"]]
    images = np.zeros((4, 8, 8, 3), np.uint8)

    def run(seed, epoch, start=0):
        got = []
        loader = DataLoader(images, one_caption_each(texts), lambda t: got.extend(t) or
                            np.zeros((len(t), 2)), batch_size=2, seed=seed, prefetch=False)
        indices = [idx for _, _, idx in loader.iter_epoch(epoch, start_batch=start)]
        return dict(zip(np.concatenate(indices).tolist(), got))

    full = run(5, 2)
    assert full == run(5, 2) and run(5, 2, start=1).items() <= full.items()
    assert all(c in texts[i] for i, c in full.items())
    assert len({tuple(sorted(run(s, 0).items())) for s in range(6)}) > 1      # the seed matters
    assert one_caption_each(texts)([3, 0]) == ["g", "a"]                      # rng None: the first


def test_all_captions_flattens_with_the_image_of_each():
    flat, image_of_text = all_captions([["a", "b"], ["c"], ["d", "e", "f"]])
    assert flat == ["a", "b", "c", "d", "e", "f"]
    assert image_of_text.tolist() == [0, 0, 1, 2, 2, 2]


def test_csv_rows_naming_one_image_are_one_image_with_its_captions(tmp_path):
    for name, colour in (("r.png", "red"), ("g.png", "green")):
        Image.new("RGB", (20, 20), COLOURS[colour]).save(tmp_path / name)
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\nr.png\tred one\ng.png\tgreen one\n"
                                        "r.png\tred two\nr.png\tred three\ng.png\tgreen two\n")
    ds = CsvDataset(tmp_path / "pairs.tsv", image_size=8)
    assert len(ds) == 2 and ds.arrays().shape == (2, 8, 8, 3)
    assert ds.texts_per_image == [["red one", "red two", "red three"], ["green one", "green two"]]
    assert ds.texts == ["red one", "green one"] and ds.captions([1, 0]) == ["green one", "red one"]
    drawn = {ds.captions([0], np.random.default_rng(s))[0] for s in range(30)}
    assert drawn == {"red one", "red two", "red three"}


@pytest.fixture(scope="module")
def micro():
    tokenizer = Tokenizer.default()
    config = dataclasses.replace(get_config("micro"), vocab_size=len(tokenizer))
    return CLIP(config, seed=0), tokenizer


def test_csv_task_scores_held_out_images_with_all_their_captions(tmp_path, micro):
    model, tokenizer = micro
    rows = ["filepath\ttitle"]
    for i in range(20):
        Image.new("RGB", (12, 12), (10 * i, 255 - 10 * i, 40)).save(tmp_path / f"{i}.png")
        rows += [f"{i}.png\tpicture {i} seen once", f"{i}.png\tpicture {i} seen twice"]
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    task = tasks.make_task(f"csv:{tmp_path / 'pairs.tsv'}")
    assert task.train_images.shape[0] == 18                    # images, not rows, are held out
    result = task.evaluate(model, tokenizer)
    images = CsvDataset(tmp_path / "pairs.tsv").arrays()[18:]
    texts = [f"picture {i} seen {w}" for i in (18, 19) for w in ("once", "twice")]
    assert result == recall_at_k(encode_images(model, images), encode_texts(model, texts, tokenizer),
                                 image_of_text=np.array([0, 0, 1, 1]))


def test_shapes_caption_set_is_five_different_wordings():
    ds = ShapesDataset("test")
    sets = ds.caption_set(np.arange(300), 5)
    assert all(len(s) == 5 and len(set(s)) == 5 for s in sets)
    assert sets == ds.caption_set(np.arange(300), 5)            # fixed by (seed, index)
    assert [s[0] for s in sets[:5]] == ds.captions(np.arange(5))


def test_shapes_task_adds_five_caption_retrieval(micro, monkeypatch):
    model, tokenizer = micro
    monkeypatch.setattr(tasks, "FIVE_CAPTION_IMAGES", 50)
    result = tasks.make_task("shapes", train=False).evaluate(model, tokenizer, limit=80)
    data = ShapesDataset("test")
    flat, image_of_text = all_captions(data.caption_set(np.arange(50), 5))
    expected = recall_at_k(encode_images(model, data.arrays()[:50]),
                           encode_texts(model, flat, tokenizer), image_of_text=image_of_text)
    assert {k: result[f"test/5-caption/{k}"] for k in expected} == expected
    assert "test/image_to_text_R@1" in result and "test/colour" in result     # kept


def test_cli_eval_on_a_karpathy_split_prints_recall_both_ways(tmp_path, micro, capsys):
    model, tokenizer = micro
    path, images = karpathy_files(tmp_path)
    checkpoint = tmp_path / "checkpoint.npz"
    save_checkpoint(checkpoint, model, meta={"config": {"dataset": "shapes", "seed": 0},
                                             "model": dataclasses.asdict(model.config),
                                             "tokenizer_merges": tokenizer.merges})
    argv = ["eval", "--checkpoint", str(checkpoint), "--dataset", f"karpathy:{path}",
            "--images", str(images), "--split", "test"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [f"{way}_R@{k}" for k in (1, 5, 10)
                                                   for way in ("image_to_text", "text_to_image")]
    assert main(argv + ["--json"]) == 0
    ds = KarpathyDataset(path, images, "test", image_size=model.config.image_resolution)
    flat, image_of_text = all_captions(ds.texts_per_image)
    assert json.loads(capsys.readouterr().out) == pytest.approx(recall_at_k(
        encode_images(model, ds.arrays()), encode_texts(model, flat, tokenizer),
        image_of_text=image_of_text))
    assert main(argv[:5]) == 2
    assert "give the image folder with --images" in capsys.readouterr().err


def test_training_on_a_karpathy_split(tmp_path):
    from miniclip.train import TrainConfig, train
    path, images = karpathy_files(tmp_path)
    task = tasks.make_task(f"karpathy:{path}", images=str(images))
    assert task.train_images.shape[0] == 3                      # train + restval
    summary = train(TrainConfig(dataset=f"karpathy:{path}", images=str(images), model="micro",
                                steps=2, batch_size=2, out=str(tmp_path / "runs"),
                                device="cpu"), progress=False)
    assert summary["headline"] == "image_to_text_R@1" and summary["steps"] == 2
