"""Every lesson notebook runs top to bottom in fast mode (MINICLIP_FAST=1)."""
import sys
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
sys.path.insert(0, str(LESSONS))
run = pytest.importorskip("run_lessons", reason="lessons/run_lessons.py needs nbclient and nbformat")

NOTEBOOKS = run.notebooks()


def test_there_are_ten_lessons():
    assert len(NOTEBOOKS) == 10, [nb.name for nb in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_lesson_runs_in_fast_mode(path):
    run.execute(path, fast=True, save=False)
