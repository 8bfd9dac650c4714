"""CsvDataset: OpenCLIP-style filepath/title files of a user's own pairs."""
import numpy as np
import pytest
from PIL import Image

from miniclip.data.csv import CsvDataset
from miniclip.data.transforms import resize_and_crop


@pytest.fixture
def pairs(tmp_path):
    """Three images (one in a subfolder, one given by absolute path) and a TSV listing them."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    files = {"img/a.png": (40, 30), "b.png": (20, 50), str(tmp_path / "c.jpg"): (32, 32)}
    images = {}
    for name, (w, h) in files.items():
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image.save(name if name.startswith("/") else tmp_path / name)
        images[name] = image
    rows = ["filepath\ttitle"] + [f"{name}\tpicture {k}" for k, name in enumerate(files)]
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path, images


def test_good_file_loads(pairs):
    folder, images = pairs
    ds = CsvDataset(folder / "pairs.tsv", image_size=16)
    assert len(ds) == 3 and ds.arrays().shape == (3, 16, 16, 3) and ds.arrays().dtype == np.uint8
    assert ds.captions([2, 0]) == ["picture 2", "picture 0"]
    for k, (name, image) in enumerate(images.items()):
        expect = np.asarray(resize_and_crop(Image.open(name if name.startswith("/") else folder / name), 16))
        np.testing.assert_array_equal(ds[k][0], expect)
        assert ds[k][1] == f"picture {k}"


def test_other_separator_and_column_names(pairs):
    folder, _ = pairs
    text = (folder / "pairs.tsv").read_text().replace("\t", ",").replace("filepath,title", "image,caption")
    (folder / "pairs.csv").write_text(text)
    ds = CsvDataset(folder / "pairs.csv", sep=",", img_key="image", caption_key="caption")
    assert ds.captions([1]) == ["picture 1"]


def test_missing_column_names_the_columns(pairs):
    folder, _ = pairs
    with pytest.raises(ValueError, match=r"columns found: \['filepath', 'title'\]"):
        CsvDataset(folder / "pairs.tsv", caption_key="caption")
    (folder / "comma.csv").write_text("filepath,title\nb.png,x\n")
    with pytest.raises(ValueError, match="sep=','"):
        CsvDataset(folder / "comma.csv")


def test_corrupt_image_fails_naming_it(pairs):
    folder, _ = pairs
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    truncated = (folder / "img" / "a.png").read_bytes()[:200]
    (folder / "cut.png").write_bytes(truncated)
    with open(folder / "pairs.tsv", "a") as f:
        f.write("broken.png\tbad one\nmissing.png\tgone\ncut.png\tcut short\n")
    with pytest.raises(ValueError, match=r"broken\.png.*on_error='skip'"):
        CsvDataset(folder / "pairs.tsv")
    with pytest.warns(UserWarning, match="skipped 3 of 6"):
        ds = CsvDataset(folder / "pairs.tsv", on_error="skip")
    assert len(ds) == 3 and ds.captions([0, 1, 2]) == ["picture 0", "picture 1", "picture 2"]
    assert [p.rsplit("/", 1)[1] for p in ds.skipped] == ["broken.png", "missing.png", "cut.png"]
