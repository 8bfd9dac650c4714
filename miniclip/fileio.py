"""File utilities every reader and writer of miniclip shares.

atomic_write: nothing lost. The bytes go to a temporary file in the same
folder, are flushed and fsynced to disk, then renamed over the old file
(checkpoints, downloads, CIFAR caches, safetensors exports and run files all
go through it). A crash mid-write leaves the previous file intact.

read_bounded: no small surprise. A file is read only when it is a regular
file no larger than the caller's limit, so a config that is really a
gigabyte (or a FIFO that never ends) is refused by name before it is read.
"""
import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path, write):
    """Call write(file_object) on a temp file beside `path`, then rename it to `path`.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                   # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def umask():
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


def read_bounded(path, limit, what="file"):
    """The bytes of `path`, refused (ValueError naming it) when it is not a regular
    file or holds more than `limit` bytes; at most limit + 1 bytes are ever read."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: the {what} is not a regular file")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: the {what} is larger than {limit:,} bytes, far more than one "
                         f"ever holds: not a {what}, or damaged")
    return data
