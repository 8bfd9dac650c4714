"""Round four of bad inputs (issue 24: data, tokenizer, images, evaluation, zero-shot) and
retrieval recall with several captions per image (issue 26, item 1). Every test builds its
bad input itself; the memory-bound ones run in a subprocess under RLIMIT_AS."""
import dataclasses
import gzip
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miniclip import tasks as tasks_module
from miniclip import tokenizer as tk
from miniclip.checkpoint import save_checkpoint
from miniclip.cli import error_message, main
from miniclip.data.csv import CsvDataset
from miniclip.data.loader import DataLoader
from miniclip.data.transforms import to_8bit
from miniclip.download import DownloadError
from miniclip.evaluate import recall_at_k
from miniclip.config import get_config
from miniclip.model import CLIP
from miniclip.tasks import make_task
from miniclip.tokenizer import Tokenizer, tokenize, train_bpe


# ---- recall@K as CLIP_benchmark defines it --------------------------------------------

def reference_recall(image_features, text_features, image_of_text, k):
    """CLIP_benchmark's retrieval metric, written from its definition (no torch):
    scores (T, N) = texts @ images.T; positive[t, image_of_text[t]] = True;
    image retrieval: per text, is a positive among its top k images (mean over texts);
    text retrieval: per image, is any positive among its top k texts (mean over images).
    Ties go against the right answer: among equal scores the negatives come first."""
    scores = text_features @ image_features.T
    positive = np.zeros(scores.shape, dtype=bool)
    positive[np.arange(len(text_features)), image_of_text] = True

    def hits(scores, positive):
        found = []
        for row, pos in zip(scores, positive):
            order = np.lexsort((pos, -row))      # by score, best first; negatives before positives
            found.append(pos[order[:k]].sum() / pos.sum() > 0)
        return float(np.mean(found))
    return {f"image_to_text_R@{k}": hits(scores.T, positive.T),
            f"text_to_image_R@{k}": hits(scores, positive)}


@pytest.mark.parametrize("seed", range(4))
def test_recall_with_several_captions_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    n = 12
    image_of_text = np.repeat(np.arange(n), rng.integers(1, 6, n))   # 1-5 captions per image
    rng.shuffle(image_of_text)
    images = rng.standard_normal((n, 8))
    texts = images[image_of_text] + 1.5 * rng.standard_normal((len(image_of_text), 8))
    # ties: coarse rounding makes equal scores, and some texts are copies of others
    images, texts = np.round(images), np.round(texts)
    texts[1::4] = texts[0::4][:len(texts[1::4])]
    for k in (1, 3, 5, 10):
        got = recall_at_k(images, texts, ks=(k,), image_of_text=image_of_text)
        assert got == pytest.approx(reference_recall(images, texts, image_of_text, k))


def test_recall_one_to_one_matches_the_reference_with_ties():
    rng = np.random.default_rng(7)
    images, texts = np.round(rng.standard_normal((20, 4))), np.round(rng.standard_normal((20, 4)))
    texts[5:10] = texts[0]
    got = recall_at_k(images, texts, ks=(1, 5))
    for k in (1, 5):
        assert {key: v for key, v in got.items() if key.endswith(f"@{k}")} == pytest.approx(
            reference_recall(images, texts, np.arange(20), k))


def test_identical_features_score_zero_not_one_hundred_percent():
    # all-empty captions give identical text features: every score ties (was 100 %)
    features = np.ones((8, 4)) / 2.0
    result = recall_at_k(features, features, ks=(1, 5))
    assert result["image_to_text_R@1"] == 0.0 and result["text_to_image_R@1"] == 0.0
    assert result["image_to_text_R@5"] == 0.0


def test_recall_refuses_texts_without_a_pairing():
    with pytest.raises(ValueError, match="pass image_of_text"):
        recall_at_k(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="every image needs at least one text"):
        recall_at_k(np.ones((3, 2)), np.ones((4, 2)), image_of_text=[0, 0, 1, 1])


# ---- CSV / TSV files ----------------------------------------------------------------------

def write_images(folder, count):
    for k in range(count):
        Image.new("RGB", (8, 8), (k * 5 % 256, 0, 0)).save(folder / f"{k}.png")


def test_tsv_caption_starting_with_a_quote_keeps_every_row(tmp_path):
    write_images(tmp_path, 40)
    rows = [f'{k}.png\t"quoted" caption {k}' if k == 3 else f"{k}.png\tcaption {k}" for k in range(40)]
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\n" + "\n".join(rows) + "\n")
    ds = CsvDataset(tmp_path / "pairs.tsv", image_size=8)
    assert len(ds) == 40 and ds.texts[3] == '"quoted" caption 3'   # was 6 pairs: rows swallowed


def test_csv_uses_standard_quoting_and_a_bom_is_stripped(tmp_path):
    write_images(tmp_path, 2)
    text = '\ufefffilepath,title\n0.png,"a cat, asleep"\n1.png,"a ""dog"""\n'
    (tmp_path / "pairs.csv").write_text(text, encoding="utf-8")
    ds = CsvDataset(tmp_path / "pairs.csv", image_size=8, sep=",")
    assert ds.texts == ["a cat, asleep", 'a "dog"']                 # was: no column 'filepath'


@pytest.mark.parametrize("row, header", [("1.png", "filepath\ttitle"), ("1.png", "title\tfilepath"),
                                         ("1.png\tx\ty", "filepath\ttitle")])
def test_a_row_with_a_missing_or_extra_field_is_named_at_load(tmp_path, row, header):
    write_images(tmp_path, 3)
    first = "0.png\tok" if header.startswith("filepath") else "ok\t0.png"
    (tmp_path / "pairs.tsv").write_text(f"{header}\n{first}\n{row}\n")
    with pytest.raises(ValueError, match=r"pairs.tsv line 3: \d fields where the header has 2"):
        CsvDataset(tmp_path / "pairs.tsv", image_size=8)   # was a TypeError, or one at evaluation


def run_with_timeout(code, timeout=20, limit=None):
    """Run Python code in a fresh process (under an address-space limit if given); a hang
    raises subprocess.TimeoutExpired (the test fails) instead of blocking the suite."""
    if limit:
        code = (f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
                + code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)


def test_a_fifo_or_a_folder_as_image_is_refused_without_hanging(tmp_path):
    write_images(tmp_path, 1)
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.png").mkdir()
    for name in ("pipe.png", "folder.png"):
        (tmp_path / "pairs.tsv").write_text(f"filepath\ttitle\n0.png\tok\n{name}\tbad\n")
        code = (f"from miniclip.data.csv import CsvDataset\n"
                f"CsvDataset({str(tmp_path / 'pairs.tsv')!r}, image_size=8)\n")
        try:
            result = run_with_timeout(code, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name}: hangs")                           # was: the FIFO hung forever
        assert f"line 3: the image {tmp_path / name} is" in result.stderr, result.stderr
    code = f"from miniclip.data.csv import CsvDataset\nCsvDataset({str(tmp_path / 'pipe.png')!r})\n"
    assert "pipe.png: not a regular file" in run_with_timeout(code).stderr   # the CSV itself a FIFO


def test_bad_utf8_and_the_field_size_limit_name_the_file_and_line(tmp_path):
    write_images(tmp_path, 2)
    (tmp_path / "pairs.tsv").write_bytes(b"filepath\ttitle\n0.png\tok\n1.png\tcaf\xe9\n")
    with pytest.raises(ValueError, match=r"pairs.tsv line 3: not valid UTF-8 \(byte 0xe9\)"):
        CsvDataset(tmp_path / "pairs.tsv", image_size=8)
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\n0.png\tok\n1.png\t" + "x" * 200_000 + "\n")
    with pytest.raises(ValueError, match=r"pairs.tsv line 3: field larger than field limit"):
        CsvDataset(tmp_path / "pairs.tsv", image_size=8)


def test_a_tiny_csv_says_a_tenth_is_held_out(tmp_path):
    write_images(tmp_path, 2)
    (tmp_path / "one.tsv").write_text("filepath\ttitle\n0.png\ta\n")
    with pytest.raises(ValueError, match="held out for evaluation, so none is left to train on"):
        make_task(f"csv:{tmp_path / 'one.tsv'}")
    (tmp_path / "two.tsv").write_text("filepath\ttitle\n0.png\ta\n1.png\tb\n")
    task = make_task(f"csv:{tmp_path / 'two.tsv'}", image_size=8)
    with pytest.raises(ValueError, match="holds back its last tenth"):
        DataLoader(task.train_images, task.captions, len, batch_size=8)


def test_csv_column_errors_name_the_cli_flags(tmp_path):
    (tmp_path / "pairs.tsv").write_text("image\ttitle\n")
    with pytest.raises(ValueError, match="Pass --csv-img-key with the right name"):
        CsvDataset(tmp_path / "pairs.tsv")
    (tmp_path / "comma.csv").write_text("filepath,title\n")
    with pytest.raises(ValueError, match="pass --csv-separator ','"):
        CsvDataset(tmp_path / "comma.csv")


# ---- images: bounded in pixels before decoding ----------------------------------------------

def write_big_16bit_png(path, side=12000):
    """A PNG of side² 16-bit grey pixels, all zero: ~1 MB on disk, 288 MB as pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(1)
    block = b"\0" * (1 + 2 * side) * 200                             # 200 rows: filter byte + pixels
    idat = b"".join([z.compress(block) for _ in range(side // 200)] + [z.flush()])
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)     # 16-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))


def test_a_huge_16bit_png_in_a_csv_is_refused_from_its_header(tmp_path):
    write_images(tmp_path, 1)
    write_big_16bit_png(tmp_path / "big.png")
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\n0.png\tok\nbig.png\thuge\n")
    code = (f"from miniclip.data.csv import CsvDataset\n"
            f"CsvDataset({str(tmp_path / 'pairs.tsv')!r}, image_size=8)\n")
    result = run_with_timeout(code, limit=1 << 30)                   # was 2.6 GB
    assert "line 3: the image" in result.stderr and "is too large (12000 x 12000): more than " \
        "64,000,000 pixels" in result.stderr, result.stderr[-2000:]
    assert "MemoryError" not in result.stderr and "DecompressionBomb" not in result.stderr


def test_16bit_scaling_in_integers_equals_the_float_formula():
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    got = np.asarray(to_8bit(Image.fromarray(v)))                  # mode I;16
    np.testing.assert_array_equal(got, np.clip(np.rint(v / 257.0), 0, 255).astype(np.uint8))
    w = np.array([[-300, -1, 0, 128, 129, 70000]], dtype=np.int32)  # mode I: out of range clipped
    np.testing.assert_array_equal(np.asarray(to_8bit(Image.fromarray(w))), [[0, 0, 0, 0, 1, 255]])


# ---- tokenizer files and inputs -------------------------------------------------------------

def test_a_merges_file_without_a_header_keeps_its_first_merge(tmp_path):
    (tmp_path / "m.txt").write_text("a b\nab c\n")
    assert Tokenizer.from_file(tmp_path / "m.txt").merges == [("a", "b"), ("ab", "c")]  # was [("ab", "c")]
    (tmp_path / "openai.txt").write_text('"bpe_simple_vocab_16e6.txt#version: 0.2\na b\n')
    assert Tokenizer.from_file(tmp_path / "openai.txt").merges == [("a", "b")]


@pytest.mark.parametrize("body, match", [
    ("a b\nab c\na b\n", "line 4: the merge 'a b' repeats line 2"),
    ("a b\nabc d\n", "line 3: 'abc' is neither a byte nor made by an earlier merge"),
    ("a b\nab\n", "line 3: expected 'left right'"),
    ("a b\n\nab c\n", "line 3: expected 'left right'")])
def test_duplicated_missing_or_malformed_merges_are_refused_by_line(tmp_path, body, match):
    (tmp_path / "m.txt").write_text("#version: 0.2\n" + body)
    with pytest.raises(ValueError, match=f"m.txt, {match}"):
        Tokenizer.from_file(tmp_path / "m.txt")


def test_merges_file_not_utf8_names_the_line(tmp_path):
    (tmp_path / "m.txt").write_bytes(b"#version: 0.2\na b\n\xff c\n")
    with pytest.raises(ValueError, match=r"m.txt, line 3: not valid UTF-8 \(byte 0xff\)"):
        Tokenizer.from_file(tmp_path / "m.txt")


def test_a_gzip_merges_bomb_is_refused_early(tmp_path):
    """2 MB of gzip inflating to 2 GB of zeros (a valid file): refused after 16 MB, under 1 GB."""
    chunk, n = b"\0" * (1 << 20), 2048
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)   # the same bytes each MB
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    (tmp_path / "bomb.txt.gz").write_bytes(
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + block * n + deflate.flush()
        + struct.pack("<II", crc, (n << 20) & 0xFFFFFFFF))
    code = (f"from miniclip.tokenizer import Tokenizer\n"
            f"Tokenizer.from_file({str(tmp_path / 'bomb.txt.gz')!r})\n")
    result = run_with_timeout(code, timeout=60, limit=1 << 30)         # was 2.2-5.7 GB
    assert "bomb.txt.gz: more than 16,777,216 bytes of merges" in result.stderr, result.stderr[-2000:]


def test_a_fifo_merges_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    code = f"from miniclip.tokenizer import Tokenizer\nTokenizer.from_file({str(tmp_path / 'pipe')!r})\n"
    assert "pipe: not a regular file" in run_with_timeout(code).stderr    # was: hung forever


def test_truncate_does_not_encode_a_huge_word_in_full():
    tok = Tokenizer.default()
    word = "ab" * 100_000                                              # 200 KB, one piece
    calls = []
    original = tok.bpe

    def spy(piece):
        calls.append(len(piece))
        return original(piece)
    tok.bpe = spy
    row = tokenize(word, truncate=True, tokenizer=tok)[0]
    assert row[-1] == tok.eot_token and max(calls) <= 2 * 76 * tok.longest_token   # was 200,000


def test_truncate_gives_the_same_ids_as_encoding_in_full():
    tok = Tokenizer.default()
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghij kl"), size=int(n))) for n in rng.integers(1, 4000, 40)]
    texts = words + ["a photo of a " + "very " * 30 + "big red circle.", "x" * 3000,
                     "a red square on the left", "Größe " * 100, "!!!" * 500 + " 12345 " * 40]
    for context in (5, 20, 77):
        for text in texts:
            full = [tok.sot_token] + tok.encode(text) + [tok.eot_token]   # today's path
            if len(full) > context:
                full = full[:context - 1] + [tok.eot_token]
            expect = np.zeros(context, np.int64)
            expect[:len(full)] = full
            np.testing.assert_array_equal(tokenize(text, context, truncate=True, tokenizer=tok)[0],
                                          expect)


@pytest.mark.parametrize("texts, merges, match", [([], 100, "no words"), (["", "  "], 10, "no words"),
                                                  (["a cat", "a cat"], -5, "num_merges=-5"),
                                                  (["a cat"], 2.5, "num_merges=2.5")])
def test_train_bpe_refuses_an_empty_corpus_or_a_bad_merge_count(texts, merges, match):
    with pytest.raises(ValueError, match=match):
        train_bpe(texts, merges)
    assert train_bpe(["a cat", "a cat"], 0).merges == []                # 0 merges: bytes only, allowed


# ---- zero-shot, eval and tokenize on the command line ---------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A micro model's checkpoint (random weights, miniclip's vocabulary) and a small image."""
    folder = tmp_path_factory.mktemp("zs")
    tokenizer = Tokenizer.default()
    model = CLIP(dataclasses.replace(get_config("micro"), vocab_size=len(tokenizer)), seed=0)
    save_checkpoint(folder / "checkpoint.npz", model,
                    meta={"config": {"dataset": "shapes", "seed": 0},
                          "model": dataclasses.asdict(model.config),
                          "tokenizer_merges": tokenizer.merges})
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "red.png")
    return folder


def one_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[0].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[0]


@pytest.mark.parametrize("template", ["a photo", "a {} and {}", "a {0}.", "a {name}"])
def test_zeroshot_template_needs_exactly_one_placeholder(checkpoint, capsys, template):
    args = ["zeroshot", "--checkpoint", str(checkpoint / "checkpoint.npz"), str(checkpoint / "red.png"),
            "--labels", "red,blue", "--template", template]
    assert main(args) == 2                              # was a uniform 50 % (33.33 % with 3) or a traceback
    assert "must hold exactly one {}" in one_error(capsys)


def test_zeroshot_empty_and_repeated_labels(checkpoint, capsys):
    base = ["zeroshot", "--checkpoint", str(checkpoint / "checkpoint.npz"), str(checkpoint / "red.png")]
    assert main(base + ["--labels", " , ,"]) == 2       # was "need at least one array to concatenate"
    assert "--labels ' , ,': no label" in one_error(capsys)
    assert main(base + ["--labels", "red,blue,red"]) == 0
    captured = capsys.readouterr()
    assert "'red' more than once" in captured.err and captured.out.count(" red: ") == 1


def test_zeroshot_image_errors_take_the_error_path(checkpoint, capsys):
    (checkpoint / "text.png").write_text("not an image")
    base = ["zeroshot", "--checkpoint", str(checkpoint / "checkpoint.npz"), "--labels", "a,b"]
    assert main(base + [str(checkpoint / "text.png")]) == 2    # was exit 1 without "error:"
    assert f"cannot read the image {checkpoint / 'text.png'}" in one_error(capsys)
    assert main(base + [str(checkpoint / "missing.png")]) == 2
    assert one_error(capsys) == f"error: no such file or folder: {checkpoint / 'missing.png'}"


def test_zeroshot_huge_png_and_fifo_are_refused(checkpoint):
    write_big_16bit_png(checkpoint / "big.png")
    os.mkfifo(checkpoint / "pipe.png")
    for name, expect in (("big.png", "is too large (12000 x 12000)"), ("pipe.png", "not a regular file")):
        code = ("import sys\nfrom miniclip.cli import main\n"
                f"sys.exit(main(['zeroshot', '--checkpoint', {str(checkpoint / 'checkpoint.npz')!r}, "
                f"{str(checkpoint / name)!r}, '--labels', 'a,b']))\n")
        result = run_with_timeout(code, timeout=60, limit=3 << 29)   # 1.5 GB; the PNG took 2.6 GB
        assert result.returncode == 2 and expect in result.stderr, result.stderr[-2000:]


def test_zeroshot_refuses_non_finite_scores(checkpoint, capsys):
    tokenizer = Tokenizer.default()
    model = CLIP(dataclasses.replace(get_config("micro"), vocab_size=len(tokenizer)), seed=0)
    next(iter(model.parameters())).data[...] = np.nan
    save_checkpoint(checkpoint / "nan.npz", model, meta={"model": dataclasses.asdict(model.config),
                                                          "tokenizer_merges": tokenizer.merges})
    code = main(["zeroshot", "--checkpoint", str(checkpoint / "nan.npz"), str(checkpoint / "red.png"),
                 "--labels", "a,b,c"])
    out = capsys.readouterr()
    assert code == 2 and "nan%" not in out.out                 # was "nan%" for every label
    assert out.err.startswith("error: ") and ("NaN" in out.err or "non-finite" in out.err)


def test_eval_prints_percentages(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(tasks_module, "shapes_task", lambda *a, **k: tasks_module.Task(
        "shapes", None, None, None, lambda model, tok, limit=None: {"test/colour": 0.25, "top5": None},
        ("test/colour",), "test/colour", None))
    assert main(["eval", "--checkpoint", str(checkpoint / "checkpoint.npz")]) == 0
    assert "test/colour" in (out := capsys.readouterr().out) and "25.00 %" in out   # was 0.25 in JSON


def test_tokenize_uses_the_builtin_vocabulary_by_default(capsys):
    assert main(["tokenize", "a red circle"]) == 0             # was OpenAI's (a download)
    assert str(Tokenizer.default().encode("a red circle")) in capsys.readouterr().out


def test_the_download_advice_is_given_once(tmp_path, monkeypatch):
    monkeypatch.setattr(tk, "find_asset", lambda name: None)
    monkeypatch.setenv("MINICLIP_CACHE", str(tmp_path))
    monkeypatch.setattr(tk, "OPENAI_VOCAB_URL", (tmp_path / "nowhere.gz").as_uri())
    with pytest.raises(DownloadError) as err:
        tk.openai_vocab_path()
    assert str(err.value).count("MINICLIP_ASSETS") == 1, str(err.value)


# ---- out-of-memory messages -----------------------------------------------------------------

def test_out_of_memory_while_reading_a_file_names_it(tmp_path, monkeypatch):
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\n")

    def no_memory(self):
        raise MemoryError()
    monkeypatch.setattr(Path, "read_bytes", no_memory)
    with pytest.raises(MemoryError) as err:
        CsvDataset(tmp_path / "pairs.tsv")
    line = error_message(err.value)
    assert "pairs.tsv" in line and "--batch-size" not in line      # was "try a smaller --batch-size"
    assert "--batch-size" in error_message(MemoryError())             # an allocation: the batch


# ---- plots ----------------------------------------------------------------------------------

def test_long_captions_do_not_make_a_huge_similarity_plot(tmp_path):
    code = ("import numpy as np\nimport matplotlib\nmatplotlib.use('Agg')\nfrom PIL import Image\n"
            "from miniclip import viz\n"
            f"path = {str(tmp_path / 'similarity.png')!r}\n"
            "viz.similarity_matrix(np.eye(2), ['x' * 100_000, 'y\\n' * 1000], path)\n"
            "print(Image.open(path).size)\n")
    result = run_with_timeout(code, timeout=120, limit=3 << 29)      # was 700,072 px wide, 1.4 GB
    assert result.returncode == 0, result.stderr[-2000:]
    width, height = eval(result.stdout)
    assert width < 2000 and height < 2000


def test_a_truncated_or_damaged_gzip_merges_file_is_one_line(tmp_path):
    data = gzip.compress(b"#version: 0.2\n" + b"a b\n" * 1000)
    (tmp_path / "cut.gz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cut.gz: the gzip data ends early"):   # was an EOFError
        Tokenizer.from_file(tmp_path / "cut.gz")
    (tmp_path / "bad.gz").write_bytes(data[:12] + b"\xff" * 20 + data[32:])
    with pytest.raises(ValueError, match="bad.gz: damaged gzip data"):
        Tokenizer.from_file(tmp_path / "bad.gz")


def test_a_huge_png_in_a_cifar_image_folder_is_refused_from_its_header(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / split / "cat" / "a.png")
    write_big_16bit_png(tmp_path / "train" / "cat" / "big.png")
    code = ("from miniclip.data.cifar import CIFAR10_CLASSES, read_image_folder\n"
            f"read_image_folder({str(tmp_path)!r}, CIFAR10_CLASSES)\n")
    result = run_with_timeout(code, limit=1 << 30)                   # was 2.6 GB before the size check
    assert "train/cat/big.png is 12000x12000, CIFAR images are 32x32" in result.stderr, \
        result.stderr[-2000:]
