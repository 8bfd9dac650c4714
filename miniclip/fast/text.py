"""The text tower's exact saving: only the positions up to the batch's last end token.

The text transformer is causal (token t sees tokens 0..t) and the text feature is
read at each row's end-of-text token. So a position after the batch's last end
token influences no token that is read, in any layer: dropping those columns of
`ids` before the tower gives the same features, and the same gradients (those
positions' gradients are exactly zero in the full computation). For five-word
prompts padded to 77 that is most of the text tower's work, in inference and
in training.

CLIP.encode_text asks the switch for "CLIP.text_ids"; with the fast tier on it
gets `trim_text_ids`. tests/test_fast.py holds features and every gradient equal
with and without it.

On the CPU only: for ids on a device (CuPy, or the strict test device), finding T
is a device-to-host read, a synchronisation per batch that the training loop and
evaluation are built to avoid (tests/test_strict.py counts them); they run the
whole context there.
"""
import numpy as np


def is_causal(attn_mask):
    """True when the additive mask hides every later position (−inf strictly above the diagonal)."""
    return attn_mask is not None and bool(np.isneginf(attn_mask[np.triu_indices(len(attn_mask), 1)]).all())


def trim_text_ids(ids, eos_token_id=None, attn_mask=None):
    """ids (N, C) -> ids[:, :T] (N, T), T = 1 + the batch's last end-token position.

    The end token of a row is its largest id (the first one), or its first
    `eos_token_id` when the config names one: CLIP.encode_text's rule. Only under a
    causal attn_mask: without one (or with any mask that lets a token see later ones)
    every position can change the pooled row, and ids come back whole."""
    if type(ids) is not np.ndarray or ids.size == 0 or type(attn_mask) is not np.ndarray:
        return ids                # on a device, T would cost a synchronising read per batch
    if not is_causal(attn_mask):
        return ids
    where = ids.argmax(axis=-1) if eos_token_id is None else (ids == eos_token_id).argmax(axis=-1)
    return ids[:, :int(where.max()) + 1]
