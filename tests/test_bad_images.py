"""Images that Pillow's defaults turn into wrong numbers or huge work (issue 12, item 5)."""
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from miniclip.data.csv import CsvDataset
from miniclip.data.transforms import Preprocess, resize_and_crop, to_8bit


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = Image.open(tmp_path / "deep.png")
    assert image.mode in ("I;16", "I")
    out = np.asarray(resize_and_crop(image, 32).convert("RGB"))
    expect = np.rint(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expect)
    assert 100 < out.mean() < 155  # was 255 everywhere but the first pixel


def test_float_tiff_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(ramp).save(tmp_path / "float.tif")
    out = np.asarray(to_8bit(Image.open(tmp_path / "float.tif")).convert("RGB"))
    np.testing.assert_array_equal(out[..., 1], np.rint(ramp * 255).astype(np.uint8))
    x = Preprocess(16)(Image.open(tmp_path / "float.tif"))
    assert x.std() > 0.5  # was a constant (black) image


def test_float_image_in_0_255_kept(tmp_path):
    values = np.full((8, 8), 200.0, np.float32)
    assert np.asarray(to_8bit(Image.fromarray(values))).max() == 200


def test_extreme_aspect_ratio_is_cheap(tmp_path):
    tall = np.zeros((1_000_000, 1), np.uint8)
    tall[500_000:] = 255
    Image.fromarray(tall).save(tmp_path / "tall.png")
    assert (tmp_path / "tall.png").stat().st_size < 10_000
    code = (f"import resource, time\nresource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            f"from PIL import Image\nfrom miniclip.data.transforms import resize_and_crop\n"
            f"t = time.time()\nout = resize_and_crop(Image.open({str(tmp_path / 'tall.png')!r}), 32)\n"
            f"print(out.size, time.time() - t)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"OPENBLAS_NUM_THREADS": "1", "PATH": ""})
    assert result.stdout.startswith("(32, 32)"), result.stdout + result.stderr
    assert float(result.stdout.split()[-1]) < 1.0


def test_box_resize_agrees_with_resize_then_crop():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (400, 30, 3), dtype=np.uint8))
    fast = np.asarray(resize_and_crop(image, 16), dtype=int)
    new_h = int(16 * 400 / 30)
    top = int(round((new_h - 16) / 2.0))
    slow = np.asarray(image.resize((16, new_h), Image.BICUBIC).crop((0, top, 16, top + 16)), dtype=int)
    assert np.abs(fast - slow).max() <= 1


def write_csv(folder, names):
    (folder / "pairs.tsv").write_text("filepath\ttitle\n" + "".join(f"{n}\tcaption {n}\n" for n in names))
    return folder / "pairs.tsv"


def test_decompression_bomb_is_a_clear_error_or_skipped(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x limit: a "bomb"
    path = write_csv(tmp_path, ["ok.png", "bomb.png"])
    with pytest.raises(ValueError, match="line 3: the image .*bomb.png is too large"):
        CsvDataset(path, image_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CsvDataset(path, image_size=8, on_error="skip")
    assert len(ds) == 1 and ds.skipped == [str(tmp_path / "bomb.png")]
