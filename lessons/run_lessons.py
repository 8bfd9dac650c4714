"""Execute lesson notebooks top to bottom and save them with their outputs.

    python lessons/run_lessons.py                 # every lesson, full mode
    python lessons/run_lessons.py --fast 03 07    # lessons 03 and 07 in fast mode (MINICLIP_FAST=1)
    python lessons/run_lessons.py --check         # run without saving (what the tests do)

Each notebook runs in its own kernel with the lessons folder as working
directory; the time each took is printed.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent


def notebooks(selection=()):
    found = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
    if selection:
        found = [nb for nb in found if any(nb.name.startswith(s) for s in selection)]
    return found


def execute(path, fast=False, save=True, timeout=900):
    """Run one notebook; returns seconds taken. Raises on the first failing cell."""
    os.environ["MINICLIP_FAST"] = "1" if fast else "0"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(LESSONS)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    if save:
        nbformat.write(nb, path)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", help="number prefixes, e.g. 01 07 (default: all)")
    parser.add_argument("--fast", action="store_true", help="MINICLIP_FAST=1: minutes, not more")
    parser.add_argument("--check", action="store_true", help="do not save the outputs")
    args = parser.parse_args(argv)
    for path in notebooks(args.lessons):
        seconds = execute(path, fast=args.fast, save=not args.check)
        print(f"{path.name:45s} {seconds:7.1f} s ({'fast' if args.fast else 'full'})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
