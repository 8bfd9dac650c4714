"""Tokenizer tests: OpenAI parity on the fixture cases, train_bpe against a naive
trainer, file round trips, tokenize()'s errors, and the download helpers.

OpenAI's vocabulary comes from $MINICLIP_ASSETS (default ../shared/assets) and
the cases from $MINICLIP_FIXTURES (default ../shared/fixtures); tests that need
them skip when they are absent.
"""
import gzip
import hashlib
import heapq
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from miniclip import tokenizer as tk
from miniclip.download import DownloadError, cache_dir, download, find_asset
from miniclip.tokenizer import Tokenizer, clean, tokenize, train_bpe

from conftest import ASSETS, FIXTURES
CASES_FILE = FIXTURES / "tokenizer" / "clip_tokenizer_cases.jsonl"
VOCAB_FILE = ASSETS / tk.OPENAI_VOCAB_FILE


@pytest.fixture(scope="module")
def openai_tok():
    if not VOCAB_FILE.is_file():
        pytest.skip(f"OpenAI's vocabulary {VOCAB_FILE} is absent (set MINICLIP_ASSETS)")
    return Tokenizer.from_file(VOCAB_FILE, num_merges=tk.OPENAI_NUM_MERGES)


@pytest.fixture(scope="module")
def cases():
    if not CASES_FILE.is_file():
        pytest.skip(f"tokenizer fixture {CASES_FILE} is absent (set MINICLIP_FIXTURES)")
    return [json.loads(line) for line in CASES_FILE.read_text().splitlines() if line.strip()]


def mismatches(cases, got, field):
    """The texts whose result differs from the fixture's `field`, for the failure message."""
    return [case["text"][:60] for case, value in zip(cases, got) if value != case[field]]


# ---- OpenAI parity ----------------------------------------------------------

def test_openai_vocabulary_layout(openai_tok):
    assert len(openai_tok) == 49408
    assert (openai_tok.sot_token, openai_tok.eot_token) == (49406, 49407)
    assert openai_tok.vocab[:256] == list(tk.bytes_to_unicode().values())
    assert openai_tok.vocab[256 + 33] == openai_tok.vocab[33] + "</w>"
    assert openai_tok.vocab[512] == "in"  # the first merge line, 'i n'


def test_bytes_to_unicode_is_a_printable_bijection():
    table = tk.bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"  # GPT-2's space symbol


def test_encode_matches_openai_ids(openai_tok, cases):
    got = [openai_tok.encode(case["text"]) for case in cases]
    assert not mismatches(cases, got, "ids")


def test_encode_is_the_same_with_a_warm_cache(openai_tok, cases):
    openai_tok.clear_cache()
    first = [openai_tok.encode(case["text"]) for case in cases]
    assert len(openai_tok._cache) > 100
    second = [openai_tok.encode(case["text"]) for case in cases]
    assert first == second
    assert not mismatches(cases, second, "ids")


def test_decode_matches_openai(openai_tok, cases):
    got = [openai_tok.decode(case["ids"]) for case in cases]
    assert not mismatches(cases, got, "decoded")


def test_round_trip_is_the_cleaned_text_up_to_spacing(openai_tok, cases):
    for case in cases:
        decoded = openai_tok.decode(openai_tok.encode(case["text"]))
        assert decoded == case["decoded"]
        # decode puts a space after every word and none inside one
        assert decoded.replace(" ", "") == clean(case["text"]).replace(" ", ""), case["text"]


def test_tokenize_matches_clip_tokenize_truncated(openai_tok, cases):
    rows = tokenize([case["text"] for case in cases], truncate=True, tokenizer=openai_tok)
    assert rows.dtype == np.int64 and rows.shape == (len(cases), 77)
    assert not mismatches(cases, rows.tolist(), "tokenize77")


def test_tokenize_default_uses_openai_vocabulary_from_assets(monkeypatch, openai_tok):
    monkeypatch.setenv("MINICLIP_ASSETS", str(ASSETS))
    tk._openai_tokenizer.cache_clear()
    try:
        row = tokenize("a photo of a cat.")
    finally:
        tk._openai_tokenizer.cache_clear()
    expected = [49406] + openai_tok.encode("a photo of a cat.") + [49407]
    assert row.shape == (1, 77)
    assert row[0, :len(expected)].tolist() == expected
    assert not row[0, len(expected):].any()


def test_special_token_text_maps_to_its_id(openai_tok):
    assert openai_tok.encode("<|startoftext|>a<|endoftext|>") == [49406, 320, 49407]
    assert openai_tok.encode("<|ENDOFTEXT|>") == [49407]  # lower-cased first


def test_ascii_fast_split_equals_the_unicode_pattern():
    chars = [chr(i) for i in range(128)]
    for a, b in itertools.product(chars, repeat=2):
        for text in (a + b, "'" + a + b, a + "'" + b, "<|endoftext|>" + a):
            assert tk.ASCII_PATTERN.findall(text) == tk.PATTERN.findall(text), repr(text)


def merge_pair(word, pair):
    """Symbols of `word` with every adjacent occurrence of `pair` joined, left to right."""
    new, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            new.append(word[i] + word[i + 1])
            i += 2
        else:
            new.append(word[i])
            i += 1
    return new


def openai_style_bpe(ranks, token):
    """OpenAI's merge loop, written plainly: strings, recount pairs every pass."""
    word = list(token[:-1]) + [token[-1] + "</w>"]
    while len(word) > 1:
        pairs = list(zip(word, word[1:]))
        best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        word = merge_pair(word, best)
    return word


@pytest.mark.parametrize("merges", [
    # overlapping and repeated pairs are where a merge loop can go wrong
    [("a", "a"), ("a", "b"), ("aa", "a</w>"), ("ab", "ab"), ("b", "a"),
     ("aa", "aa"), ("b", "b</w>"), ("aaaa", "a</w>")],
    # ('ab', 'a') outranks ('a', 'b'): all of 'a b' must merge before it is considered
    [("ab", "a"), ("a", "b"), ("b", "a"), ("ab", "b</w>")],
])
def test_merge_loop_matches_openai_style_on_repeats(merges):
    tok = Tokenizer(merges)
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("ab"), size=n)) for n in rng.integers(1, 12, size=400)]
    words += ["".join(rng.choice(list("ab"), size=n)) for n in rng.integers(49, 120, size=100)]  # heap path
    for word in words + ["aaaaa", "aaaaaa", "ababab", "bababb", "ababx"]:
        expected = [tok.encoder[s] for s in openai_style_bpe(ranks, word)]
        assert tok.encode(word) == expected, word


def test_merge_loop_matches_openai_style_on_random_words(openai_tok):
    ranks = {pair: rank for rank, pair in enumerate(openai_tok.merges)}
    rng = np.random.default_rng(1)
    letters = list("etaoinshrdlucmfwypvbgkqjxz")
    for n in rng.integers(1, 16, size=300):
        word = "".join(rng.choice(letters, size=n))
        expected = [openai_tok.encoder[s] for s in openai_style_bpe(ranks, word)]
        assert openai_tok.encode(word) == expected, word


def test_bpe_long_equals_bpe_on_many_words(openai_tok):
    """The fast path for long pieces gives OpenAI's loop's ids on ordinary words too."""
    rng = np.random.default_rng(3)
    letters = list("etaoinshrdlucmfwypvbgkqjxz'.0é")
    words = ["photo", "a", "diagram", "caféteria", "aaaaaaaaaa", "mississippi"]
    words += ["".join(rng.choice(letters, size=n)) for n in rng.integers(1, 49, size=2000)]
    for word in words:
        assert openai_tok.bpe_long(word.encode("utf-8")) == openai_tok.bpe(word), word


def test_decode_rejects_ids_outside_the_vocabulary(openai_tok):
    with pytest.raises(ValueError, match="49408"):
        openai_tok.decode([320, 49408])
    with pytest.raises(ValueError):
        openai_tok.decode([-1])


# ---- tokenize() -------------------------------------------------------------

def small_tokenizer():
    return train_bpe(["a photo of a cat.", "a photo of a dog."] * 3, 30)


def test_tokenize_rows_are_sot_ids_eot_then_zeros():
    tok = small_tokenizer()
    rows = tokenize(["a cat", "a dog."], context_length=8, tokenizer=tok)
    assert rows.dtype == np.int64 and rows.shape == (2, 8)
    for row, text in zip(rows, ["a cat", "a dog."]):
        ids = [tok.sot_token] + tok.encode(text) + [tok.eot_token]
        assert row.tolist() == ids + [0] * (8 - len(ids))


def test_tokenize_too_long_names_the_text_and_its_length():
    tok = small_tokenizer()
    text = "a photo of a cat " * 4
    count = len(tok.encode(text)) + 2
    with pytest.raises(ValueError) as err:
        tokenize(["a cat", text], context_length=10, tokenizer=tok)
    assert isinstance(err.value, RuntimeError)      # what OpenAI's clip.tokenize raises
    message = str(err.value)
    assert str(count) in message and "a photo of a cat" in message
    assert "truncate=True" in message and "context_length" in message


def test_tokenize_truncate_cuts_and_ends_with_eot():
    tok = small_tokenizer()
    text = "a photo of a cat " * 4
    row = tokenize(text, context_length=10, truncate=True, tokenizer=tok)[0]
    ids = [tok.sot_token] + tok.encode(text)
    assert row[:9].tolist() == ids[:9]
    assert row[9] == tok.eot_token


def test_non_string_input_raises_type_error():
    tok = small_tokenizer()
    with pytest.raises(TypeError):
        tok.encode(None)
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    with pytest.raises(TypeError):
        tokenize(["a cat", 3], tokenizer=tok)
    with pytest.raises(TypeError):
        train_bpe("a single string", 10)


# ---- train_bpe --------------------------------------------------------------

def naive_train_bpe(texts, num_merges, min_frequency=2):
    """The textbook trainer: recount every pair over every word at every step."""
    words = [tk.piece_symbols(piece) for text in texts for piece in tk.pre_tokenize(text)
             if piece not in (tk.SOT_TEXT, tk.EOT_TEXT)]
    merges = []
    for _ in range(num_merges):
        counts = {}
        for word in words:
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, then smallest
        if counts[best] < min_frequency:
            break
        merges.append(best)
        words = [merge_pair(word, best) for word in words]
    return merges


def corpus(num_texts=300, seed=0):
    """Small random corpus with repeats, overlaps ('aaaa', 'abab'), punctuation, non-ASCII."""
    rng = np.random.default_rng(seed)
    vocab = ["the", "then", "there", "a", "aaaa", "abab", "banana", "bandana", "cat", "cats",
             "catalog", "dog", "red", "reddish", "café", "naïve", "!!", "...", "1", "42",
             "it's", "<|endoftext|>", "mississippi", "ssss"]
    return [" ".join(rng.choice(vocab, size=rng.integers(1, 10))) for _ in range(num_texts)]


@pytest.mark.parametrize("min_frequency", [1, 2, 5])
def test_train_bpe_equals_naive_trainer(min_frequency):
    texts = corpus()
    merges = train_bpe(texts, 150, min_frequency=min_frequency).merges
    assert merges == naive_train_bpe(texts, 150, min_frequency=min_frequency)
    assert len(merges) > 20


def test_train_bpe_ties_go_to_the_smallest_pair():
    # ('b', 'a') and ('a', 'b') both occur twice; the smaller tuple wins first.
    assert train_bpe(["ba ab"] * 2, 1).merges == [("a", "b</w>")]
    assert train_bpe(["ab ab ba ba"], 1).merges == [("a", "b</w>")]


def test_train_bpe_stops_when_no_pair_is_frequent_enough():
    tok = train_bpe(["hello world", "hello there"], 1000, min_frequency=2)
    assert 0 < len(tok.merges) < 10
    assert naive_train_bpe(["hello world", "hello there"], 1000) == tok.merges


def test_trained_tokenizer_layout_and_round_trip():
    texts = corpus()
    tok = train_bpe(texts, 100)
    assert len(tok) == 512 + len(tok.merges) + 2
    assert tok.sot_token == len(tok) - 2 and tok.eot_token == len(tok) - 1
    ids = tok.encode(texts[0])
    assert max(ids) < tok.sot_token or "<|endoftext|>" in texts[0]
    assert tok.decode(ids).replace(" ", "") == clean(texts[0]).replace(" ", "")
    # a frequent word ends up as one token
    assert tok.encode("the") == [tok.encoder["the</w>"]]


# ---- files ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vocab.txt", "vocab.txt.gz"])
def test_save_then_from_file_round_trip(tmp_path, name):
    texts = corpus()
    tok = train_bpe(texts, 80)
    path = tmp_path / name
    tok.save(path)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    loaded = Tokenizer.from_file(path)
    assert loaded.merges == tok.merges and loaded.vocab == tok.vocab
    assert [loaded.encode(t) for t in texts] == [tok.encode(t) for t in texts]
    tok.save(tmp_path / ("again_" + name))
    assert (tmp_path / ("again_" + name)).read_bytes() == path.read_bytes()  # deterministic


def test_openai_file_save_round_trip(tmp_path, openai_tok):
    openai_tok.save(tmp_path / "openai.txt.gz")
    loaded = Tokenizer.from_file(tmp_path / "openai.txt.gz")
    assert loaded.merges == openai_tok.merges and len(loaded) == 49408


def test_from_file_num_merges_and_bad_lines(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("#version: 0.2\na b\nab c\nx y\n")
    assert Tokenizer.from_file(path).merges == [("a", "b"), ("ab", "c"), ("x", "y")]
    assert Tokenizer.from_file(path, num_merges=2).merges == [("a", "b"), ("ab", "c")]
    with pytest.raises(ValueError, match="num_merges"):
        Tokenizer.from_file(path, num_merges=10)
    path.write_text("#version: 0.2\na b\nabc\n")
    with pytest.raises(ValueError, match="line 3"):
        Tokenizer.from_file(path)


def test_default_vocabulary_is_shipped_and_small():
    tok = Tokenizer.default()
    assert 600 < len(tok) < 3000
    assert tok.eot_token == len(tok) - 1


def test_default_vocabulary_matches_its_recipe():
    from miniclip.data import vocab
    texts = vocab.default_vocab_corpus()
    fresh = train_bpe(texts, vocab.DEFAULT_NUM_MERGES)
    assert Tokenizer.default().merges == fresh.merges, (
        "miniclip/data/miniclip_bpe.txt.gz is out of date with the captions/prompts: rebuild "
        "it with python -m miniclip tokenize --train")
    assert max(len(fresh.encode(t)) for t in texts) <= 30  # every caption and prompt is short


# ---- finding and downloading files ------------------------------------------

def test_cache_dir_and_find_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICLIP_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MINICLIP_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "miniclip"
    monkeypatch.setenv("MINICLIP_ASSETS", str(tmp_path))
    assert find_asset("x.bin") is None
    (tmp_path / "x.bin").write_bytes(b"x")
    assert find_asset("x.bin") == tmp_path / "x.bin"


def test_download_verifies_checksums(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(200_000))
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    assert download(source.as_uri(), dest, sha256=sha, md5=md5) == dest
    assert dest.read_bytes() == source.read_bytes()
    bad = tmp_path / "bad.bin"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(source.as_uri(), bad, sha256="0" * 64)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download(source.as_uri(), bad, md5="0" * 32)
    assert not bad.exists() and not list(tmp_path.glob("bad.bin*"))  # no half-written files


def test_openai_vocabulary_lookup_order(tmp_path, monkeypatch):
    if not VOCAB_FILE.is_file():
        pytest.skip(f"OpenAI's vocabulary {VOCAB_FILE} is absent (set MINICLIP_ASSETS)")
    monkeypatch.setenv("MINICLIP_ASSETS", str(ASSETS))
    monkeypatch.setenv("MINICLIP_CACHE", str(tmp_path / "cache"))
    assert tk.openai_vocab_path() == ASSETS / tk.OPENAI_VOCAB_FILE
    # Not in the assets: "download" it (from a local file:// URL) into the cache.
    monkeypatch.setenv("MINICLIP_ASSETS", str(tmp_path / "empty"))
    monkeypatch.setattr(tk, "OPENAI_VOCAB_URL", VOCAB_FILE.resolve().as_uri())
    path = tk.openai_vocab_path()
    assert path == tmp_path / "cache" / tk.OPENAI_VOCAB_FILE
    assert gzip.open(path).readline().startswith(b'"bpe_simple_vocab_16e6.txt#version')
    # Now found in the cache without a download.
    monkeypatch.setattr(tk, "OPENAI_VOCAB_URL", (tmp_path / "nowhere.gz").as_uri())
    assert tk.openai_vocab_path() == path


def test_openai_vocabulary_offline_error_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICLIP_ASSETS", str(tmp_path / "empty"))
    monkeypatch.setenv("MINICLIP_CACHE", str(tmp_path / "cache"))
    url = (tmp_path / "nowhere.gz").as_uri()
    monkeypatch.setattr(tk, "OPENAI_VOCAB_URL", url)
    with pytest.raises(DownloadError) as err:
        Tokenizer.openai()
    message = str(err.value)
    assert "MINICLIP_ASSETS" in message and url in message
    assert str(tmp_path / "cache" / tk.OPENAI_VOCAB_FILE) in message


# ---- ftfy, where OpenAI applies it ------------------------------------------------

@pytest.mark.parametrize("text, fixed", [
    ("it\u2019s a \u201ccat\u201d", "it's a \"cat\""),          # curly quotes
    ("\uff08\u732b\uff09\uff01", "(\u732b)!"),                  # full-width CJK punctuation
    ("cafe\u0301", "caf\u00e9"),                                # NFC
    ("sch\u00c3\u00b6n", "sch\u00f6n"),                          # mojibake (UTF-8 read as Latin-1)
    ("\ufb01sh", "fish"),                                        # a ligature
])
def test_ftfy_runs_first_as_in_openais_basic_clean(openai_tok, text, fixed):
    import ftfy
    assert ftfy.fix_text(text) == fixed
    assert clean(text) == clean(fixed)
    assert openai_tok.encode(text) == openai_tok.encode(fixed)


def test_the_ftfy_fast_path_only_skips_text_ftfy_leaves_alone():
    import random
    import ftfy
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(32, 127)] + ["\t", "\n"]
    skipped = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        if tk.FTFY_IDENTITY.fullmatch(text):
            skipped += 1
            assert ftfy.fix_text(text) == text, repr(text)
        assert tk.fix_text(text) == ftfy.fix_text(text), repr(text)
    assert skipped > 1000
    for text in ("a &amp; b", "a\rb", "x\x1b[31my", "caf\u00e9"):
        assert not tk.FTFY_IDENTITY.fullmatch(text)


# ---- long words, many words, unencodable text (issue 12, item 9) ------------------------

def test_long_word_equals_openai_style_and_scales_n_log_n(openai_tok, monkeypatch):
    rng = np.random.default_rng(2)
    letters = list("etaoinshrdlucmfwypvbgkqjxz")
    ranks = {pair: rank for rank, pair in enumerate(openai_tok.merges)}
    for size in (49, 60, 200, 700):  # the heap path (longer than tk.SHORT_PIECE)
        word = "".join(rng.choice(letters, size=size))
        expected = [openai_tok.encoder[s] for s in openai_style_bpe(ranks, word)]
        assert openai_tok.bpe(word) == expected, size

    # the work, counted rather than timed: heap operations (each O(log n)) per word
    counts = {"ops": 0}

    class CountingHeap:
        def __getattr__(self, name):
            def counted(*args):
                counts["ops"] += 1
                return getattr(heapq, name)(*args)
            return counted
    monkeypatch.setattr(tk, "heapq", CountingHeap())

    def heap_operations(n):
        word = "".join(rng.choice(letters, size=n))
        counts["ops"] = 0
        assert openai_tok.decode(openai_tok.bpe(word)) == word + " "
        return counts["ops"]
    small, large = heap_operations(4_000), heap_operations(16_000)
    # 4x the letters: a linear number of heap operations gives ~4x (n log n time), a
    # quadratic rescan of every pair per merge would give ~16x
    assert large / small < 6, f"4,000 letters: {small} heap operations, 16,000: {large}"


def test_piece_cache_is_bounded(monkeypatch):
    tok = Tokenizer([("a", "b")])
    monkeypatch.setattr(tok, "CACHE_SIZE", 100)
    words = [f"w{chr(0x4e00 + k)}" for k in range(1000)]  # 1000 distinct pieces
    first = tok.encode(" ".join(words))
    assert len(tok._cache) == 100
    assert tok.encode(" ".join(words)) == first  # evicted pieces are merged again, the same
    assert tok.encode("<|endoftext|>") == [tok.eot_token]  # specials never evicted
    assert Tokenizer.CACHE_SIZE == 65536


def test_lone_surrogate_becomes_the_replacement_character_as_in_openai():
    # OpenAI's basic_clean runs ftfy.fix_text, which turns a lone surrogate (no UTF-8
    # bytes exist for it) into U+FFFD; miniclip does the same instead of failing
    tok = Tokenizer([])
    assert tok.encode("a photo of a \udcff cat") == tok.encode("a photo of a \ufffd cat")
