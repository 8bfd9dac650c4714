"""Every expected failure on the command line: one line `error: <the whole message>`, exit 2;
--debug / MINICLIP_DEBUG=1 for the traceback; a bug keeps its traceback (issue 12, item 11)."""
import csv
import json
import pickle
import tarfile

import pytest
from PIL import Image

from miniclip import cli
from miniclip.cli import main


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[0]


def test_missing_file_names_the_file(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "pairs.tsv"
    assert main(["tokenize", "--vocab", str(missing), "hi"]) == 2
    assert one_error_line(capsys) == f"error: no such file or folder: {missing}"  # was "error: 2"


def test_folder_where_a_file_is_expected(tmp_path, capsys):
    assert main(["tokenize", "--vocab", str(tmp_path), "hi"]) == 2
    assert one_error_line(capsys) == f"error: a folder where a file is expected: {tmp_path}"


def test_lone_surrogate_is_encoded_as_openai_does(capsys):
    # was "error: utf-8"; ftfy (OpenAI's cleaning step) makes it U+FFFD
    assert main(["tokenize", "--vocab", "miniclip", "a \udcff"]) == 0


@pytest.mark.parametrize("exc", [EOFError("the file ended early"), OverflowError("too big"),
                                 pickle.UnpicklingError("bad pickle"), OSError(28, "No space left on device", "/full/x"),
                                 tarfile.ReadError("not a gzip file"), csv.Error("field larger than field limit"),
                                 Image.DecompressionBombError("Image size (1000000000 pixels) exceeds limit")])
def test_expected_types_give_one_line(monkeypatch, capsys, exc):
    def fail(args):
        raise exc
    monkeypatch.setattr(cli, "_tokenize", fail)
    assert main(["tokenize", "x"]) == 2
    line = one_error_line(capsys)
    assert line != "error: " and ("no space left" in line or str(exc) in line)


def test_debug_flag_and_env_show_the_traceback(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["tokenize", "--vocab", str(tmp_path / "x"), "hi", "--debug"])
    monkeypatch.setenv("MINICLIP_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["tokenize", "--vocab", str(tmp_path / "x"), "hi"])


def test_a_bug_keeps_its_traceback(monkeypatch):
    def bug(args):
        raise TypeError("unsupported operand type(s)")
    monkeypatch.setattr(cli, "_tokenize", bug)
    with pytest.raises(TypeError):
        main(["tokenize", "x"])


def test_keyerror_message_is_whole(monkeypatch, capsys):
    def fail(args):
        raise KeyError(b"labels")
    monkeypatch.setattr(cli, "_tokenize", fail)
    assert main(["tokenize", "x"]) == 2
    assert one_error_line(capsys) == "error: missing entry b'labels' (the file or settings lack it)"


# ---- the train command (issue 24, "weak": a newcomer's first hour) ------------------------------

def quick_train(tmp_path, *flags):
    return ["train", "--model", "micro", "--steps", "1", "--batch-size", "8", "--train-size", "32",
            "--out", str(tmp_path), "--device", "cpu", "--no-progress", *flags]


@pytest.mark.parametrize("argv", [["train", "--step", "5", "--batch-size", "1"],
                                  ["train", "--batch", "32", "--batch-size", "1"],
                                  ["tokenize", "--vo", "miniclip", "hi"]])
def test_abbreviated_flags_are_errors(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit:             # was: --step taken as --steps
        main(argv + ["--out", str(tmp_path)] if argv[0] == "train" else argv)
    assert exit.value.code == 2
    assert "unrecognized arguments: " + argv[1] in capsys.readouterr().err


def test_a_mistyped_flag_shows_the_commands_usage(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m miniclip train")      # was: the top-level usage
    assert "--batch-size" in err and "python -m miniclip train: error: unrecognized arguments: --bogus" in err


def test_validation_errors_have_no_debug_hint(tmp_path, capsys):
    assert main(["train", "--steps", "-5", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --steps -5: must be an integer >= 1"]           # was: + "(run again with --debug ...)"


def test_other_expected_errors_keep_the_debug_hint(monkeypatch, capsys):
    def fail(args):
        raise OSError(28, "No space left on device", "/full/x")
    monkeypatch.setattr(cli, "_tokenize", fail)
    assert main(["tokenize", "x"]) == 2
    assert "--debug" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_model_far_too_big_for_the_data_is_named_before_training(tmp_path, capsys):
    from types import SimpleNamespace
    from miniclip.config import get_config
    from miniclip.train import TrainConfig, note_model_size
    cfg = TrainConfig(model="ViT-B/32", out=str(tmp_path))
    config = get_config("ViT-B/32")
    vit_b_32 = SimpleNamespace(config=config, parameters=lambda: [SimpleNamespace(size=151_277_313)])
    note_model_size(cfg, vit_b_32, 5000)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "--model ViT-B/32 (151.3 M parameters" in out[0]
    assert "far too big for 5000 training images of 32×32, 1×1 patch(es) each" in out[0]
    assert "--model tiny" in out[0]
    # the models this project trains are not called too big
    assert main(quick_train(tmp_path, "--name", "micro")) == 0
    assert "far too big" not in capsys.readouterr().out


def write_pairs(folder, sep, img_key, caption_key, n=24):
    folder.mkdir()
    colours = ["red", "green", "blue"]
    lines = [sep.join([img_key, caption_key])]
    for i in range(n):
        colour = colours[i % 3]
        Image.new("RGB", (16, 16), colour).save(folder / f"{i}.png")
        lines.append(sep.join([f"{i}.png", f"a {colour} square"]))
    path = folder / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_separator_and_columns_are_flags(tmp_path, capsys):
    path = write_pairs(tmp_path / "data", ",", "image", "caption")
    flags = ["train", "--dataset", f"csv:{path}", "--model", "micro", "--steps", "1",
             "--batch-size", "8", "--out", str(tmp_path / "runs"), "--device", "cpu", "--no-progress"]
    assert main(flags + ["--csv-separator", ",", "--csv-img-key", "image",
                         "--csv-caption-key", "caption"]) == 0       # was: no such flags
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["steps"] == 1
    assert main(flags + ["--name", "defaults"]) == 2               # tab, filepath, title: refused
    assert "error: " in capsys.readouterr().err
    assert cli._separator("tab") == cli._separator("\\t") == "\t"   # a tab, as a shell user types it
    assert main(flags + ["--csv-separator", ",,", "--name", "two"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --csv-separator ',,': must be one character (e.g. ',' or ';'; 'tab' or '\\t' for a "
        "tab, the default)"]
