"""Execute lesson notebooks top to bottom, save them with their outputs, and stamp them.

    python lessons/run_lessons.py                 # regenerate every lesson (full mode): the one command
    python lessons/run_lessons.py 06 07           # just these
    python lessons/run_lessons.py --fast --check  # fast mode (MINICLIP_FAST=1), nothing saved: what the tests do
    python lessons/run_lessons.py --status        # which committed notebooks are stale, and why

Each notebook runs in its own kernel with the lessons folder as working directory; the time each
took is printed. A saved notebook carries in its metadata (`miniclip_lessons`) a hash of its code
cells and of the source it ran against (miniclip/**/*.py and lessons/course.py), so a test can
tell when its outputs are stale. Outputs are cleaned before saving: carriage-return progress bars
are collapsed to their last state.
"""
import argparse
import contextlib
import hashlib
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSONS))
import course  # noqa: E402  (lessons/course.py: the source hash lives there)

STAMP_KEY = "miniclip_lessons"
COMMAND = "python lessons/run_lessons.py"


def notebooks(selection=()):
    found = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
    if selection:
        found = [nb for nb in found if any(nb.name.startswith(s) for s in selection)]
    return found


def code_hash(nb):
    """sha256 of the notebook's code cells (their source only, in order)."""
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    return hashlib.sha256("\n\x00\n".join(cells).encode()).hexdigest()[:16]


def stamp(nb, seconds, fast):
    sources = course.source_hashes()
    nb.metadata[STAMP_KEY] = {"code_cells": code_hash(nb), "source": course.combined_hash(sources),
                              "source_files": sources, "mode": "fast" if fast else "full",
                              "seconds": round(seconds, 1)}


def staleness(path):
    """None if the committed notebook is fresh, else one line saying why it is not."""
    nb = nbformat.read(path, as_version=4)
    info = nb.metadata.get(STAMP_KEY)
    if info is None:
        return "never stamped (it was not saved by run_lessons.py)"
    reasons = []
    if info.get("code_cells") != code_hash(nb):
        reasons.append("its code cells changed since it was run")
    now = course.source_hashes()
    if info.get("source") != course.combined_hash(now):
        then = info.get("source_files", {})
        changed = sorted(f for f in set(now) | set(then) if now.get(f) != then.get(f))
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        reasons.append(f"the source it ran against changed ({shown})")
    if info.get("mode") != "full":
        reasons.append(f"it was saved from a {info.get('mode')} run, not a full one")
    return "; ".join(reasons) or None


_CR = re.compile(r"[^\n]*\r(?!\n)")


def _clean_outputs(nb):
    """Collapse carriage-return redraws (tqdm bars) to what a terminal would finally show: the
    kernel sends each redraw as its own stream output, so consecutive outputs of one stream are
    joined first, then every line keeps only what follows its last carriage return."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if (out.get("output_type") == "stream" and merged
                    and merged[-1].get("output_type") == "stream" and merged[-1]["name"] == out["name"]):
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream":
                text = out["text"].replace("\r\n", "\n")
                while _CR.search(text):
                    text = _CR.sub("", text)
                out["text"] = text
        if "outputs" in cell:
            cell["outputs"] = merged


@contextlib.contextmanager
def environment(**variables):
    """Set (or, with None, remove) environment variables for the kernels started inside."""
    saved = {k: os.environ.get(k) for k in variables}
    try:
        for k, v in variables.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(path, fast=False, save=True, timeout=None, env=None):
    """Run one notebook; returns seconds taken. Raises on the first failing cell.

    timeout: seconds a cell may run (None: no limit; a first full run trains for many minutes).
    env: extra environment variables for its kernel (None as a value removes one)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(LESSONS)}})
    # threads: miniclip gives BLAS and its pool the cores idle when its fast tier first runs
    # (miniclip/fast/parallel.py), so a busy machine gets one thread, a quiet one all
    with environment(MINICLIP_FAST="1" if fast else "0", **(env or {})):
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    if save:
        _clean_outputs(nb)
        stamp(nb, seconds, fast)
        nbformat.write(nb, path)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", help="number prefixes, e.g. 01 07 (default: all)")
    parser.add_argument("--fast", action="store_true", help="MINICLIP_FAST=1: minutes, not more")
    parser.add_argument("--check", action="store_true", help="run, but do not save the outputs")
    parser.add_argument("--status", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    if args.status:
        stale = 0
        for path in notebooks(args.lessons):
            why = staleness(path)
            stale += why is not None
            print(f"{path.name:45s} {'fresh' if why is None else 'STALE: ' + why}")
        return 1 if stale else 0
    if args.fast and not args.check:
        print("note: notebooks saved from a fast run count as stale; commit full runs", flush=True)
    total = 0.0
    for path in notebooks(args.lessons):
        print(f"{path.name:45s} running ...", end="", flush=True)
        seconds = execute(path, fast=args.fast, save=not args.check)
        total += seconds
        print(f"\r{path.name:45s} {seconds:7.1f} s ({'fast' if args.fast else 'full'})", flush=True)
    print(f"{'total':45s} {total:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
