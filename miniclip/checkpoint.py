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

Writes are atomic (`atomic_write`, which every file miniclip writes for keeps
goes through: checkpoints, downloads, CIFAR caches, safetensors exports): the
bytes go to a temporary file in the same folder, are flushed and fsynced to
disk, then renamed over the old file. A crash mid-write leaves the previous
file intact.
"""
import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from miniclip.backend import to_numpy


def atomic_write(path, write):
    """Call write(file_object) on a temp file beside `path`, then rename it to `path`.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                   # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(path):
    """Delete <name>.*.tmp beside `path`: what atomic_write left when its process was killed.

    Call it only while no other process writes `path` (a run holds its folder's lock).
    """
    path = Path(path)
    for stale in path.parent.glob(path.name + ".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


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


def load_checkpoint(path, optimiser=True):
    """Read a checkpoint: {'params': {name: array}, 'optim': {key: array}, 'meta': dict}.

    optimiser=False leaves the optimiser's arrays on disk ('optim' is then {}).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
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


def _config_from_meta(fields, params, path):
    """The CLIPConfig saved in a checkpoint, checked against the arrays present before
    anything is built (a huge config in a small file must not allocate gigabytes)."""
    from miniclip.model import CLIPConfig
    from miniclip.pretrained import CheckpointError, check_config_fits_state
    try:
        config = CLIPConfig(**fields)
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise CheckpointError(f"{path}: its model config {fields} is not valid ({err})") from None
    check_config_fits_state(config, params, path)
    return config


def model_from_checkpoint(path, device=None):
    """(model, tokenizer, meta) from a miniclip training checkpoint, in eval mode."""
    from miniclip import backend
    from miniclip.model import CLIP, CLIPConfig
    from miniclip.tokenizer import Tokenizer
    state = load_checkpoint(path)
    meta = state["meta"]
    if "model" not in meta:
        raise ValueError(f"{path} has no model config in its metadata: not a training checkpoint")
    model = CLIP(_config_from_meta(meta["model"], state["params"], path))
    model.load_state_dict(state["params"])
    model.to(device or backend.default_device()).eval()
    tokenizer = Tokenizer(meta["tokenizer_merges"]) if "tokenizer_merges" in meta else Tokenizer.default()
    return model, tokenizer, meta
