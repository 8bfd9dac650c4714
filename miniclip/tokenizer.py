"""Byte-level BPE tokenizer, compatible with OpenAI CLIP's `simple_tokenizer`.

Text becomes token ids in four steps:
    1. clean      ftfy.fix_text (repairs mojibake, curly quotes, full-width
                  forms, NFC, ...), html-unescape twice, collapse whitespace,
                  strip, lower-case
    2. split      a regex cuts the text into words, numbers (one digit each)
                  and runs of punctuation: "a cat's toy!" -> a, cat, 's, toy, !
    3. bytes      each piece becomes its UTF-8 bytes, one symbol per byte; the
                  last symbol carries an end-of-word mark `</w>`
    4. merge      adjacent symbols are merged, lowest-ranked pair first, using
                  the merge list (the "vocabulary file") until none applies

Ids: 0..255 the bytes, 256..511 the bytes with `</w>`, then one id per merge
(in file order), then <|startoftext|> and <|endoftext|>. With OpenAI's file
that is 49408 ids, start = 49406, end = 49407.

`train_bpe(texts, num_merges)` learns a merge list from a corpus, and
`tokenize(texts)` turns strings into the (N, 77) int64 array a text tower eats.
Every step is OpenAI's `simple_tokenizer`, ftfy included, so the ids equal
OpenAI's on all text.
"""
import errno
import gzip
import heapq
import html
import os
import re
import stat
import zlib
from collections import Counter, OrderedDict, defaultdict
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex

from miniclip.download import DownloadError, cache_dir, download, find_asset

OPENAI_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
OPENAI_VOCAB_URL = "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz"
OPENAI_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
OPENAI_NUM_MERGES = 49152 - 256 - 2  # OpenAI uses the first 48894 merge lines

# miniclip's own vocabulary ships inside the package, next to the datasets it was
# learned from (miniclip/data/vocab.py rebuilds it), found relative to this file
# as OpenAI's default_bpe() finds theirs.
DEFAULT_VOCAB_PATH = Path(__file__).resolve().parent / "data" / "miniclip_bpe.txt.gz"

SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"

# Step 2: special tokens, contractions, letter runs, single digits, punctuation runs.
PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)
WHITESPACE = regex.compile(r"\s+")
# The same split for ASCII-only text with the standard `re` module, twice as
# fast: there \p{L} is a-z (the text is lower-cased) and \p{N} is 0-9. The
# whitespace is spelled out because re's \s also matches \x1c-\x1f.
ASCII_PATTERN = re.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\t\n\x0b\x0c\r a-z0-9]+""",
    re.IGNORECASE | re.ASCII)


def bytes_to_unicode():
    """GPT-2's table byte (0..255) -> a printable character, as a dict in id order.

    Printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the
    other 68 (space, control characters, ...) get the characters from chr(256)
    on. Every symbol of the merge file is then a visible, whitespace-free string.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    for n, b in enumerate(others):
        table[b] = chr(256 + n)
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


# Text that ftfy.fix_text returns unchanged for certain: printable ASCII, tab,
# newline, and no '&' (html entities). Every ftfy fix needs a
# non-ASCII character, '&', ESC, '\r' or another control character to act on.
FTFY_IDENTITY = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


def fix_text(text):
    """ftfy.fix_text(text), skipped on text it leaves unchanged (tests/test_tokenizer.py checks that)."""
    if FTFY_IDENTITY.fullmatch(text):
        return text
    return ftfy.fix_text(text)


def clean(text):
    """Step 1, exactly as OpenAI's basic_clean + whitespace_clean + lower."""
    text = html.unescape(html.unescape(fix_text(text))).strip()
    text = WHITESPACE.sub(" ", text).strip()
    return text.lower()


def pre_tokenize(text):
    """Steps 1 and 2: the pieces BPE works on. 'A cat!' -> ['a', 'cat', '!']"""
    text = clean(text)
    if text.isascii():
        return ASCII_PATTERN.findall(text)
    return PATTERN.findall(text)


def piece_symbols(piece):
    """Step 3 as strings: 'cat' -> ['c', 'a', 't</w>'] (bytes through BYTE_TO_CHAR)."""
    symbols = [BYTE_TO_CHAR[b] for b in piece.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return symbols


class Tokenizer:
    """A merge list turned into an encoder/decoder.

    merges: list of (left, right) symbol pairs, best (lowest rank) first, as in
    the vocabulary file. Build one with `Tokenizer.from_file`, `.openai()`,
    `.default()` or `train_bpe(...)`.
    """

    def __init__(self, merges):
        self.merges = [tuple(pair) for pair in merges]
        # id -> token string: bytes, bytes + </w>, one per merge, the two specials.
        byte_chars = list(BYTE_TO_CHAR.values())
        self.vocab = (byte_chars + [c + END_OF_WORD for c in byte_chars]
                      + [left + right for left, right in self.merges] + [SOT_TEXT, EOT_TEXT])
        # token string -> id. Like OpenAI's dict(zip(vocab, range)): if two merges
        # spell the same string, the later id wins, everywhere below too.
        self.encoder = {token: i for i, token in enumerate(self.vocab)}

        # The merge loop works on ids, not strings: no string concatenation, and
        # the result comes out as ids directly.
        self._byte_ids = [self.encoder[BYTE_TO_CHAR[b]] for b in range(256)]
        self._byte_end_ids = [self.encoder[BYTE_TO_CHAR[b] + END_OF_WORD] for b in range(256)]
        self._rank = {}      # (left id, right id) -> rank (position in the merge list)
        self._merged = []    # rank -> id of the merged token
        for rank, (left, right) in enumerate(self.merges):
            self._merged.append(self.encoder[left + right])
            if left in self.encoder and right in self.encoder:  # else it can never fire
                self._rank[(self.encoder[left], self.encoder[right])] = rank
        self._no_merge = len(self.merges)  # a rank larger than every real one
        # id -> its bytes, for decode; `</w>` is plain ASCII and stays in the bytes.
        self._id_bytes = [bytes(CHAR_TO_BYTE[c] for c in token) for token in self.vocab]
        self.longest_token = max(len(b) for b in self._id_bytes)  # bytes, </w> included
        self.clear_cache()

    # ---- construction -------------------------------------------------

    @classmethod
    def from_file(cls, path, num_merges=None):
        """Read a merge file (gzip or plain text): an optional header line, then "left right" lines.

        The first line is a header when it holds '#version' (OpenAI's is
        '"bpe_simple_vocab_16e6.txt#version: 0.2', Hugging Face's and miniclip's
        '#version: 0.2 ...'); otherwise the merges start at line 1 (a merge may be '# #'). num_merges: how many merge lines to use
        (OpenAI's own file: 48894, which `Tokenizer.openai()` passes); None uses them all.
        A line that is not two symbols, a merge listed twice, or a symbol that is neither
        a byte nor made by an earlier merge (a line missing above it) is refused, naming
        the file and line: each would silently shift the ids of every later merge.
        """
        path = Path(path)
        raw = read_merges_bytes(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw.count(b"\n", 0, err.start) + 1
            raise ValueError(f"{path}, line {line}: not valid UTF-8 (byte {raw[err.start]:#04x}); "
                             "a merges file is UTF-8 text") from None
        lines = text.split("\n")
        first = 1 if "#version" in lines[0] else 0  # a header line, not a merge
        numbered = list(enumerate(lines, start=1))[first:]  # (line number, line)
        if num_merges is None:
            while numbered and not numbered[-1][1].strip():
                numbered.pop()
        elif num_merges > len(numbered):
            raise ValueError(f"{path} holds {len(numbered)} merge lines, fewer than "
                             f"num_merges={num_merges}")
        else:
            numbered = numbered[:num_merges]
        known = set(BYTE_TO_CHAR.values()) | {c + END_OF_WORD for c in BYTE_TO_CHAR.values()}
        seen = {}  # (left, right) -> its line
        merges = []
        for number, line in numbered:
            pair = tuple(line.split())
            if len(pair) != 2:
                raise ValueError(f"{path}, line {number}: expected 'left right', got {line!r}")
            if pair in seen:
                raise ValueError(f"{path}, line {number}: the merge {line!r} repeats line "
                                 f"{seen[pair]}; remove the repeat")
            for symbol in pair:
                if symbol not in known:
                    raise ValueError(f"{path}, line {number}: {symbol!r} is neither a byte nor "
                                     "made by an earlier merge (is a merge line missing above?)")
            known.add(pair[0] + pair[1])
            seen[pair] = number
            merges.append(pair)
        return cls(merges)

    @classmethod
    def openai(cls):
        """OpenAI CLIP's tokenizer (49408 ids); finds or downloads its vocabulary file."""
        return cls.from_file(openai_vocab_path(), num_merges=OPENAI_NUM_MERGES)

    @classmethod
    def default(cls):
        """miniclip's own small vocabulary (miniclip/data/miniclip_bpe.txt.gz), to train from scratch."""
        if not DEFAULT_VOCAB_PATH.is_file():
            raise FileNotFoundError(
                f"miniclip's vocabulary file {DEFAULT_VOCAB_PATH} is missing. Rebuild it "
                "with: python -m miniclip tokenize --train")
        return cls.from_file(DEFAULT_VOCAB_PATH)

    def save(self, path):
        """Write the merge list in OpenAI's format; gzip-compressed when path ends with .gz."""
        path = Path(path)
        text = "#version: 0.2 miniclip\n" + "".join(f"{a} {b}\n" for a, b in self.merges)
        data = text.encode("utf-8")
        if path.name.endswith(".gz"):
            data = gzip.compress(data, mtime=0)  # mtime=0: the same merges give the same bytes
        path.write_bytes(data)

    # ---- the vocabulary -----------------------------------------------

    def __len__(self):
        return len(self.vocab)

    @property
    def sot_token(self):
        """Id of <|startoftext|> (49406 for OpenAI's vocabulary)."""
        return self.encoder[SOT_TEXT]

    @property
    def eot_token(self):
        """Id of <|endoftext|> (49407 for OpenAI's vocabulary); the largest id."""
        return self.encoder[EOT_TEXT]

    def clear_cache(self):
        """Forget the encoded pieces (the special-token texts are always known)."""
        self._cache = OrderedDict()
        self._special = {SOT_TEXT: [self.sot_token], EOT_TEXT: [self.eot_token]}

    # ---- encode / decode ----------------------------------------------

    def encode(self, text, max_tokens=None):
        """str -> list of ids, without start/end tokens. 'a photo.' -> [320, 1125, 269]

        The text is cleaned first (ftfy, as OpenAI's basic_clean: a lone surrogate
        becomes U+FFFD there, so every str can be encoded). Each piece's ids are remembered in an LRU cache of CACHE_SIZE pieces
        (the least recently used is forgotten first), so memory stays bounded
        however many distinct words pass through.

        max_tokens: only the first max_tokens ids are wanted (tokenize's truncate=True).
        Every piece gives at least one id, so only the first max_tokens + 1 pieces are
        encoded, each cut to 2 (max_tokens + 1) x the longest token's bytes (the
        first ids of a normal word do not depend on its far end): a 10 MB word is not
        merged in full to keep 75 ids. The result starts with those ids and may be longer.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        pieces = pre_tokenize(text)
        if max_tokens is not None:
            longest = 2 * (max_tokens + 1) * self.longest_token
            pieces = [piece[:longest] for piece in pieces[:max_tokens + 1]]
        ids = []
        cache, special, size = self._cache, self._special, self.CACHE_SIZE
        for piece in pieces:
            piece_ids = cache.get(piece)
            if piece_ids is not None:
                cache.move_to_end(piece)
            else:  # a new piece: merge it once, then remember it
                piece_ids = special.get(piece) or self.bpe(piece)
                cache[piece] = piece_ids
                if len(cache) > size:
                    cache.popitem(last=False)
            ids.extend(piece_ids)
        return ids

    # How many distinct pieces encode() remembers (~100 bytes each: ~6 MB at most).
    CACHE_SIZE = 65536

    def bpe(self, piece):
        """Step 4 for one piece: its ids after all the merges that apply. 'cat' -> [2368]

        OpenAI's `bpe` loop, on ids: among the adjacent pairs of symbols, take
        the one with the lowest rank (the earliest in the merge list), merge
        every occurrence of it left to right, and repeat until no pair is in the
        merge list. A piece longer than SHORT_PIECE bytes (no ordinary word is)
        goes to `bpe_long`, the same result in O(n log n) instead of O(n²).
        """
        data = piece.encode("utf-8")
        if len(data) > SHORT_PIECE:
            return self.bpe_long(data)
        word = [self._byte_ids[b] for b in data[:-1]] + [self._byte_end_ids[data[-1]]]
        while len(word) > 1:
            ranks = [self._rank.get(pair, self._no_merge) for pair in zip(word, word[1:])]
            best = min(ranks)                                # the lowest-ranked pair present
            if best == self._no_merge:
                break                                        # no pair is in the merge list
            at = ranks.index(best)
            first, second, merged = word[at], word[at + 1], self._merged[best]
            new_word, i = [], 0
            while i < len(word):                             # merge every occurrence, left to right
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    new_word.append(merged)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = new_word
        return word

    def bpe_long(self, data):
        """`bpe` for a long piece (its UTF-8 bytes `data`): the same merges in O(n log n).

        The symbols form a linked list (nxt/prv), and a heap holds (rank,
        position) of candidate pairs. All entries of the lowest rank are taken
        in position order (one left-to-right sweep); the pairs a merge creates
        wait until that sweep ends, as in `bpe`. An entry whose pair has changed
        since it was pushed is skipped.
        """
        ids = [self._byte_ids[b] for b in data]
        ids[-1] = self._byte_end_ids[data[-1]]
        size = len(ids)
        rank_of, merged = self._rank.get, self._merged
        nxt = list(range(1, size + 1))
        nxt[-1] = -1
        prv = list(range(-1, size - 1))
        heap = [(rank, i) for i, rank in enumerate(map(rank_of, zip(ids, ids[1:]))) if rank is not None]
        heapq.heapify(heap)
        while heap:
            rank = heap[0][0]
            created = []
            while heap and heap[0][0] == rank:  # one sweep: every occurrence, left to right
                i = heapq.heappop(heap)[1]
                right = nxt[i]
                if ids[i] < 0 or right < 0 or rank_of((ids[i], ids[right])) != rank:
                    continue  # stale: merged away, or its pair has changed
                ids[i], ids[right] = merged[rank], -1  # node i becomes the merged token, right is gone
                after = nxt[right]
                nxt[i] = after
                if after >= 0:
                    prv[after] = i
                    created.append((rank_of((ids[i], ids[after])), i))
                if prv[i] >= 0:
                    created.append((rank_of((ids[prv[i]], ids[i])), prv[i]))
            for entry in created:
                if entry[0] is not None:
                    heapq.heappush(heap, entry)
        out, i = [], 0  # node 0 is never merged away (a merge keeps its left node)
        while i >= 0:
            out.append(ids[i])
            i = nxt[i]
        return out

    def decode(self, ids):
        """ids -> str, as OpenAI's: each `</w>` becomes a space. [320, 1125] -> 'a photo '"""
        size = len(self.vocab)
        pieces = []
        for i in ids:
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside this vocabulary (0..{size - 1})")
            pieces.append(self._id_bytes[i])
        text = b"".join(pieces).decode("utf-8", errors="replace")
        return text.replace(END_OF_WORD, " ")


# Pieces up to this many bytes use OpenAI's loop (`bpe`: quadratic, fine for words);
# longer ones `bpe_long` (O(n log n)): an 80,000-letter word takes ~1.5 s, not 12-20 s.
SHORT_PIECE = 48


# ---- reading merges files -------------------------------------------------

# The most bytes a merges file may hold, decompressed (OpenAI's holds 3.2 MB): a small
# gzip file that inflates to gigabytes is refused after MAX_MERGES_BYTES.
MAX_MERGES_BYTES = 16 * 2**20


def read_merges_bytes(path):
    """The bytes of a merges file, gunzipped when it starts with gzip's magic number.

    Refused before reading: a folder (IsADirectoryError), a FIFO or device (it could
    block forever), more than MAX_MERGES_BYTES on disk. A gzip file is inflated in
    steps of at most MAX_MERGES_BYTES, so it stops as soon as it is too large.
    """
    mode = os.stat(path).st_mode  # never blocks
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: not a regular file (a FIFO, socket or device); give a "
                         "merges file")
    too_large = (f"{path}: more than {MAX_MERGES_BYTES:,} bytes of merges (OpenAI's file "
                 "holds 3.2 MB): not a merges file, or a decompression bomb")
    if os.stat(path).st_size > MAX_MERGES_BYTES:
        raise ValueError(too_large)
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":  # not gzip's magic number: plain text
        return raw
    out, size = [], 0
    while raw:  # one gzip member per pass (gzip files may hold several)
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect gzip's header
        try:
            part = inflate.decompress(raw, MAX_MERGES_BYTES + 1 - size)  # at most this many
        except zlib.error as err:
            raise ValueError(f"{path}: damaged gzip data ({err})") from None
        size += len(part)
        if size > MAX_MERGES_BYTES:
            raise ValueError(too_large)
        if not inflate.eof:
            raise ValueError(f"{path}: the gzip data ends early (a truncated file)")
        out.append(part)
        raw = inflate.unused_data
    return b"".join(out)


# ---- OpenAI's vocabulary file -------------------------------------------

def openai_vocab_path():
    """Path of bpe_simple_vocab_16e6.txt.gz: MINICLIP_ASSETS, else the cache, else download."""
    path = find_asset(OPENAI_VOCAB_FILE)
    if path is not None:
        return path
    path = cache_dir() / OPENAI_VOCAB_FILE
    if path.is_file():
        return path
    try:
        return download(OPENAI_VOCAB_URL, path, sha256=OPENAI_VOCAB_SHA256)
    except DownloadError as err:  # its message already says where to put the file
        raise DownloadError(f"OpenAI's vocabulary file {OPENAI_VOCAB_FILE} is needed: {err}") from err


@lru_cache(maxsize=1)
def _openai_tokenizer():
    """The shared OpenAI tokenizer used by `tokenize` (read once per process)."""
    return Tokenizer.openai()


class TextTooLongError(RuntimeError, ValueError):
    """A text with more tokens than the context: a RuntimeError as OpenAI's
    clip.tokenize raises, and a ValueError (bad input)."""


def tokenize(texts, context_length=77, truncate=False, tokenizer=None):
    """Strings -> int64 array (N, context_length): [sot] + ids + [eot], zero-padded.

    Behaves as OpenAI's `clip.tokenize` (ftfy included): a single string gives
    one row; a text too long for the context raises TextTooLongError (both a
    RuntimeError, as OpenAI's, and a ValueError), unless truncate=True, which
    cuts it and puts eot in the last slot. tokenizer: default OpenAI's vocabulary.
    """
    if isinstance(texts, str):
        texts = [texts]
    if tokenizer is None:
        tokenizer = _openai_tokenizer()
    if context_length < 2:
        raise ValueError(f"context_length={context_length}: needs room for the start "
                         "and end tokens, so at least 2")
    sot, eot = tokenizer.sot_token, tokenizer.eot_token
    rows = np.zeros((len(texts), context_length), dtype=np.int64)
    for n, text in enumerate(texts):
        # truncating: only what can fit is encoded (a 10 MB word is not merged in full)
        wanted = context_length - 2 if truncate else None
        ids = [sot] + tokenizer.encode(text, max_tokens=wanted) + [eot]
        if len(ids) > context_length:
            if not truncate:
                shown = text if len(text) <= 60 else text[:57] + "..."
                raise TextTooLongError(
                    f"text {n} ({shown!r}) is {len(ids)} tokens with start and end, "
                    f"more than context_length={context_length}. Pass truncate=True to "
                    "cut it, or use a larger context_length.")
            ids = ids[:context_length]
            ids[-1] = eot
        rows[n, :len(ids)] = ids
    return rows


# ---- learning a vocabulary ------------------------------------------------

def _merge_symbols(word, left, right, merged):
    """word with every (left, right), scanned left to right, replaced by `merged`."""
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_bpe(texts, num_merges, min_frequency=2, verbose=False):
    """Learn up to `num_merges` merges from an iterable of strings -> Tokenizer.

    Each step merges the most frequent adjacent pair of symbols, counted over
    all words of the corpus (a word seen k times counts k times). Ties go to
    the pair that sorts first as a (left, right) tuple of strings, so the
    result is deterministic. Stops early when no pair occurs at least
    `min_frequency` times. The pieces are exactly those `encode` sees.

    Speed: each distinct word is stored once with its count, and a merge
    updates only the words that contain the pair (an index pair -> word ids)
    and the counts of the pairs it changes; a heap finds the best pair.
    """
    if isinstance(texts, str):
        raise TypeError("train_bpe() takes a list of strings, not a single string")
    if isinstance(num_merges, bool) or not isinstance(num_merges, (int, np.integer)) or num_merges < 0:
        raise ValueError(f"train_bpe(): num_merges={num_merges!r} must be an integer >= 0 "
                         "(0: bytes only)")
    piece_counts = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"train_bpe() texts must be strings, got {type(text).__name__}")
        piece_counts.update(pre_tokenize(text))
    for special in (SOT_TEXT, EOT_TEXT):
        piece_counts.pop(special, None)
    if not piece_counts:
        raise ValueError("train_bpe(): the texts hold no words to learn merges from "
                         "(empty, or only spaces)")

    words = [piece_symbols(piece) for piece in piece_counts]  # each distinct piece once
    counts = list(piece_counts.values())
    pair_counts = defaultdict(int)   # (left, right) -> occurrences in the corpus
    where = defaultdict(set)         # (left, right) -> ids of words that hold it (or did)
    for w, (word, count) in enumerate(zip(words, counts)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += count
            where[pair].add(w)
    # Max-heap of (-count, pair); entries whose count is out of date are skipped.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    while len(merges) < num_merges:
        while heap and pair_counts.get(heap[0][1]) != -heap[0][0]:
            heapq.heappop(heap)  # stale: that pair's count has changed since
        if not heap or -heap[0][0] < min_frequency:
            break
        count, (left, right) = heapq.heappop(heap)
        merged = left + right
        merges.append((left, right))
        if verbose and (len(merges) % 100 == 0 or len(merges) == num_merges):
            print(f"merge {len(merges)}/{num_merges}: {left!r} + {right!r} ({-count} times)")

        change = defaultdict(int)  # pair -> change of its count
        for w in where.pop((left, right)):
            old = words[w]
            new = _merge_symbols(old, left, right, merged)
            if len(new) == len(old):
                continue  # the pair left this word in an earlier merge
            words[w] = new
            for pair in zip(old, old[1:]):
                change[pair] -= counts[w]
            for pair in zip(new, new[1:]):
                change[pair] += counts[w]
                if merged in pair:
                    where[pair].add(w)
        for pair, delta in change.items():
            if delta == 0:
                continue
            pair_counts[pair] += delta
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair))
            else:
                del pair_counts[pair]
    if verbose:
        print(f"learned {len(merges)} merges from {len(words)} distinct words")
    return Tokenizer(merges)
