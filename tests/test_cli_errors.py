"""Every expected failure on the command line: one line `error: <the whole message>`, exit 2;
--debug / MINICLIP_DEBUG=1 for the traceback; a bug keeps its traceback (issue 12, item 11)."""
import csv
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
