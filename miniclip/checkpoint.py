"""Saving and resuming training runs: one .npz file per checkpoint.

A checkpoint holds everything needed to continue a run exactly:
    param/<name>     the model's weights (OpenAI state-dict names)
    optim/<key>      the optimiser's state (moments, step count)
    meta_json        what train.py passes as `meta` (JSON text): the step, the
                     seconds trained, the run's TrainConfig and CLIPConfig, and
                     the tokenizer's merge list
No RNG state is needed: the data order and augmentation of every batch are a
function of (seed, epoch, batch), so the step alone says where to go on.
It is a plain NumPy archive (np.load reads it without pickle).

Writes are atomic (miniclip.fileio.atomic_write): a crash mid-write leaves
the previous file intact. Reading one checks the sizes its arrays declare (the
.npy headers) against the bytes stored, and the optimiser's against the
weights', before any array is read; building a model from one
(model_from_checkpoint) also checks the weights' sizes against its saved
config, and refuses NaN or infinite weights.
"""
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from miniclip import backend
from miniclip.backend import to_numpy
from miniclip.config import CLIPConfig
from miniclip.fileio import atomic_write, remove_stale_temporaries
from miniclip.formats.checks import CheckpointError, check_config_fits_state, check_finite
from miniclip.formats.npz import npz_declared, npz_json, npz_param_shapes
from miniclip.model import CLIP
from miniclip.tokenizer import Tokenizer


def save_checkpoint(path, model, optimizer=None, meta=None):
    """Write model weights, optimiser state and `meta` (a JSON-able dict) to `path`.

    Temporary files of earlier writes killed midway are removed first.
    """
    remove_stale_temporaries(path)
    arrays = {f"param/{name}": to_numpy(value) for name, value in model.state_dict().items()}
    if optimizer is not None:
        for key, value in optimizer.state_dict().items():
            arrays[f"optim/{key}"] = to_numpy(value)
    arrays["meta_json"] = np.asarray(json.dumps(meta or {}))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path, optimiser=True, max_weights=None):
    """Read a checkpoint: {'params': {name: array}, 'optim': {key: array}, 'meta': dict}.

    optimiser=False leaves the optimiser's arrays on disk ('optim' is then {}).
    Every array's declared size is checked against the bytes its zip entry holds
    before np.load allocates it (a small crafted file must not allocate gigabytes),
    the optimiser's against the weights', and the weights' against max_weights
    (numbers) when given.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        check_declared_sizes(npz_declared(path), path, max_weights)   # headers only: nothing allocated yet
        with np.load(path, allow_pickle=False) as archive:
            params = {k[len("param/"):]: archive[k] for k in archive.files if k.startswith("param/")}
            optim = {k[len("optim/"):]: archive[k] for k in archive.files
                     if optimiser and k.startswith("optim/")}
            meta = json.loads(str(archive["meta_json"])) if "meta_json" in archive.files else {}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable miniclip checkpoint ({err}); "
                         f"it may be truncated: a training run keeps the one before it as "
                         f"checkpoint.prev.npz beside it") from err
    if not params:
        raise ValueError(f"{path} holds no 'param/*' arrays: not a miniclip checkpoint")
    return {"params": params, "optim": optim, "meta": meta}


def check_declared_sizes(declared, path, max_weights=None):
    """Refuse a checkpoint whose weights declare more than max_weights numbers (when given),
    or whose optimiser arrays declare more numbers than the optimiser can hold: AdamW keeps
    two per weight (m and v), SGD one. declared: npz_declared's dict."""
    def numbers(prefix):
        return sum(math.prod(shape) for name, (shape, _dtype) in declared.items()
                   if name.startswith(prefix))
    weights, optimiser = numbers("param/"), numbers("optim/")
    if max_weights is not None and weights > max_weights:
        raise CheckpointError(f"{path}: its weights declare {weights:,} numbers, at most "
                              f"{max_weights:,} expected: the file is damaged or crafted")
    if optimiser > 2 * weights + 1:                                  # + 1: the step count
        raise CheckpointError(f"{path}: its optimiser arrays declare {optimiser:,} numbers for "
                              f"{weights:,} weights (at most two per weight): the file is damaged "
                              f"or crafted")


def _config_from_meta(fields, params, path):
    """The CLIPConfig saved in a checkpoint, checked against the arrays present before
    anything is built (a huge config in a small file must not allocate gigabytes)."""
    try:
        config = CLIPConfig(**fields)
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise CheckpointError(f"{path}: its model config {fields} is not valid ({err})") from None
    check_config_fits_state(config, params, path)
    return config


def model_from_checkpoint(path, device=None):
    """(model, tokenizer, meta) from a miniclip training checkpoint, in eval mode.

    The saved config is checked against the weights' declared sizes before any
    array is read; a NaN or infinite weight is refused naming it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    shapes = npz_param_shapes(path)                  # declared sizes: nothing read yet
    meta = npz_json(path, "meta_json")
    if "model" not in meta:
        raise ValueError(f"{path} has no model config in its metadata: not a training checkpoint")
    config = _config_from_meta(meta["model"], shapes, path)
    state = load_checkpoint(path, optimiser=False)
    check_finite(state["params"], path)
    model = CLIP(config)
    model.load_state_dict(state["params"])
    model.to(device or backend.default_device()).eval()
    tokenizer = Tokenizer(meta["tokenizer_merges"]) if "tokenizer_merges" in meta else Tokenizer.default()
    return model, tokenizer, meta
