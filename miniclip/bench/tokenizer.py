"""Tokenizer benchmark: `python -m miniclip bench tokenizer` calls `run()`.

Compares `Tokenizer.encode` with a plain pure-Python BPE written the way
OpenAI's simple_tokenizer.py writes it (`ReferenceBPE` below: recompute the
set of pairs and min() over them with a key function every pass, strings
throughout). Both keep a per-word cache, cleared before every cold run.
Then times `train_bpe` for 2,000 merges on 100,000 generated captions.
"""
import html
import json
import os
import time
from pathlib import Path

import ftfy
import numpy as np

from miniclip.download import DownloadError
from miniclip.tokenizer import (BYTE_TO_CHAR, EOT_TEXT, PATTERN, SOT_TEXT, WHITESPACE, Tokenizer,
                                train_bpe)

class ReferenceBPE:
    """The straightforward encoder (OpenAI's simple_tokenizer.bpe/encode), same merges."""

    def __init__(self, tokenizer):
        self.encoder = tokenizer.encoder
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(tokenizer.merges)}
        self.clear_cache()

    def clear_cache(self):
        self.cache = {SOT_TEXT: SOT_TEXT, EOT_TEXT: EOT_TEXT}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = set(zip(word, word[1:]))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = set(zip(word, word[1:]))
        word = " ".join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        ids = []
        # OpenAI's basic_clean runs ftfy.fix_text on every text (miniclip's clean skips
        # it on text ftfy leaves alone), then unescapes, collapses whitespace, lowers
        text = WHITESPACE.sub(" ", html.unescape(html.unescape(ftfy.fix_text(text))).strip()).strip().lower()
        for token in PATTERN.findall(text):
            token = "".join(BYTE_TO_CHAR[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids


def generated_captions(num_captions, seed=0, num_words=30000):
    """Deterministic captions of made-up words (Zipf-like frequencies), e.g.
    'a photo of brelon tasquo vi mendrafel'. Many distinct words: a cold-cache test."""
    rng = np.random.default_rng(seed)
    onsets = ["", "b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m",
              "n", "p", "pl", "qu", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"]
    codas = ["", "", "", "n", "r", "s", "l", "m", "st", "nd", "ck", "x"]
    syllables = rng.integers(1, 5, size=num_words)
    parts = [rng.integers(0, len(table), size=(num_words, 4)) for table in (onsets, vowels, codas)]
    words = ["".join(onsets[parts[0][w, s]] + vowels[parts[1][w, s]] + codas[parts[2][w, s]]
                     for s in range(syllables[w])) for w in range(num_words)]
    probs = 1.0 / (np.arange(num_words) + 20.0)  # Zipf-like: a few common, a long tail
    lengths = rng.integers(3, 10, size=num_captions)
    picks = rng.choice(num_words, size=int(lengths.sum()), p=probs / probs.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return ["a photo of " + " ".join(words[i] for i in picks[starts[n]:starts[n + 1]])
            for n in range(num_captions)]


def fixture_texts():
    """The strings of the tokenizer fixture file under $MINICLIP_FIXTURES, or None."""
    folder = os.environ.get("MINICLIP_FIXTURES")
    path = Path(folder or ".") / "tokenizer" / "clip_tokenizer_cases.jsonl"
    if not folder or not path.is_file():
        return None
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def time_encode(encoder, texts, cold=True):
    """(seconds, number of tokens) to encode all texts; cold=True clears the cache first."""
    if cold:
        encoder.clear_cache()
    start = time.perf_counter()
    num_tokens = sum(len(encoder.encode(text)) for text in texts)
    return time.perf_counter() - start, num_tokens


def compare(report, label, ours, reference, texts, cold):
    """Time both encoders on texts (best of 3) and report tokens/s and the speed-up."""
    if not cold:  # warm: a first pass fills both caches
        time_encode(ours, texts)
        time_encode(reference, texts)
    t_ours = min(time_encode(ours, texts, cold)[0] for _ in range(3))
    t_ref, num_tokens = min(time_encode(reference, texts, cold) for _ in range(3))
    report(f"  {label:<46} miniclip {num_tokens / t_ours / 1e6:6.2f} M tok/s   "
           f"reference {num_tokens / t_ref / 1e6:6.2f} M tok/s   x{t_ref / t_ours:.1f}")
    return t_ref / t_ours


def run(report=print, smoke=False):
    """Run the tokenizer benchmark, printing lines through `report`; return the figures.

    smoke=True: 300 captions and 20 merges (checks it runs).
    """
    num_captions, num_merges = (300, 20) if smoke else (100_000, 2000)
    try:
        tokenizer, vocab_name = Tokenizer.openai(), "OpenAI's (49408 ids)"
    except DownloadError:
        tokenizer = Tokenizer.default()
        vocab_name = f"miniclip's default ({len(tokenizer)} ids; OpenAI's file unavailable)"
    reference = ReferenceBPE(tokenizer)
    report(f"tokenizer encode, vocabulary {vocab_name}")
    results = {}

    captions = generated_captions(num_captions)
    for text in captions[:200]:  # both must give the same ids before we time them
        assert tokenizer.encode(text) == reference.encode(text), text

    texts = fixture_texts()
    if texts is None:
        report("  (tokenizer fixtures not found: MINICLIP_FIXTURES; skipping that part)")
    else:
        texts = texts * 20
        label = f"fixture strings x20 ({len(texts)}), cold cache"
        results["fixtures_cold"] = compare(report, label, tokenizer, reference, texts, cold=True)
        results["fixtures_warm"] = compare(report, "fixture strings x20, warm cache",
                                           tokenizer, reference, texts, cold=False)
    distinct = sorted({word for text in captions[:20000] for word in text.split()})
    results["distinct_words"] = compare(report, f"{len(distinct)} distinct words, cold cache",
                                        tokenizer, reference, distinct, cold=True)
    results["captions_cold"] = compare(report, f"{num_captions:,} generated captions, cold cache",
                                       tokenizer, reference, captions, cold=True)

    start = time.perf_counter()
    trained = train_bpe(captions, num_merges)
    seconds = time.perf_counter() - start
    results["train_bpe_seconds"] = seconds
    report(f"train_bpe: {len(trained.merges)} merges on {len(captions)} generated captions "
           f"in {seconds:.2f} s")
    return results


if __name__ == "__main__":
    run()
