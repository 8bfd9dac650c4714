"""Finding and downloading the files miniclip does not ship.

Three places, looked in this order by the loaders (tokenizer, datasets,
pretrained weights):
    1. MINICLIP_ASSETS  a folder of files you already have (`find_asset`)
    2. the cache        MINICLIP_CACHE, default ~/.cache/miniclip (`cache_dir`)
    3. the network      `download(url, dest, sha256=...)` into the cache

A download goes to a temporary file next to `dest` (fileio.atomic_write),
its checksum is verified, and only then is it renamed to `dest`: an interrupted or corrupted download
never leaves a file that looks finished.
"""
import hashlib
import os
import urllib.request
from pathlib import Path

from tqdm import tqdm

from miniclip.fileio import atomic_write


class DownloadError(RuntimeError):
    """A download failed (no network, HTTP error, or a checksum mismatch)."""


def cache_dir():
    """The cache folder: $MINICLIP_CACHE, or ~/.cache/miniclip (not created here)."""
    folder = os.environ.get("MINICLIP_CACHE")
    if folder:
        return Path(folder).expanduser()
    return Path.home() / ".cache" / "miniclip"


def find_asset(filename):
    """$MINICLIP_ASSETS/filename if that file exists, else None."""
    folder = os.environ.get("MINICLIP_ASSETS")
    if not folder:
        return None
    path = Path(folder).expanduser() / filename
    return path if path.is_file() else None


def download(url, dest, sha256=None, md5=None):
    """Download `url` to the file `dest` with a progress bar; return dest as a Path.

    When `sha256` and/or `md5` (hex strings) are given, the bytes are checked
    before the file is moved into place; a mismatch raises DownloadError and
    leaves nothing behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    hashers = {}
    if sha256:
        hashers["sha256"] = (hashlib.sha256(), sha256.lower())
    if md5:
        hashers["md5"] = (hashlib.md5(), md5.lower())

    def fetch(out):
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True,
                          unit_divisor=1024, desc=dest.name) as bar:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        for hasher, _ in hashers.values():
                            hasher.update(chunk)
                        bar.update(len(chunk))
        except OSError as err:  # URLError, HTTPError, timeouts, resets
            raise DownloadError(
                f"could not download {url}: {err}. Offline? Fetch the file elsewhere and "
                f"put it at {dest} (or in the folder named by MINICLIP_ASSETS for "
                f"weights and vocabularies, MINICLIP_DATA for datasets)") from err
        for name, (hasher, expected) in hashers.items():
            if hasher.hexdigest() != expected:
                raise DownloadError(
                    f"{name} mismatch for {url}: expected {expected}, got "
                    f"{hasher.hexdigest()}. The file was discarded; try again, or "
                    f"download it by hand and check it before putting it at {dest}")

    atomic_write(dest, fetch)  # a failure (raised inside fetch) leaves nothing at dest
    return dest
