"""Every lesson notebook runs top to bottom in fast mode (MINICLIP_FAST=1), both with the shared
folders (fixtures, OpenAI's vocabulary, CIFAR) and without them, as on a fresh clone; and every
committed notebook's outputs are fresh (made by run_lessons.py from its current code cells and
the current miniclip source)."""
import sys
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
sys.path.insert(0, str(LESSONS))
import run_lessons as run  # noqa: E402  (the test extra installs nbclient and nbformat)
course = run.course

NOTEBOOKS = run.notebooks()
IDS = [nb.stem[:2] for nb in NOTEBOOKS]
SHARED = {"MINICLIP_FIXTURES": course.FIXTURES, "MINICLIP_ASSETS": course.ASSETS,
          "MINICLIP_DATA": course.DATA}


def test_the_lessons_are_numbered_in_order():
    numbers = [int(nb.name[:2]) for nb in NOTEBOOKS]
    assert numbers == list(range(1, 16)), [nb.name for nb in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_lesson_runs_with_the_shared_folders(path):
    missing = [name for name, folder in SHARED.items() if not Path(folder).is_dir()]
    if missing:
        pytest.skip(f"shared folders not found ({', '.join(missing)}); the fresh-clone test still runs")
    run.execute(path, fast=True, save=False, timeout=3600, env={k: str(v) for k, v in SHARED.items()})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_lesson_runs_on_a_fresh_clone(path, tmp_path):
    """No ../shared, an empty download cache, and no network needed."""
    nowhere = tmp_path / "no-shared-folder"
    env = {name: nowhere / name.lower() for name in SHARED}
    env["MINICLIP_CACHE"] = tmp_path / "empty-cache"
    run.execute(path, fast=True, save=False, timeout=3600, env={k: str(v) for k, v in env.items()})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_outputs_are_fresh(path):
    why = run.staleness(path)
    assert why is None, (f"{path.relative_to(LESSONS.parent)} is stale: {why}. Regenerate it with "
                         f"`{run.COMMAND} {path.name[:2]}` (or all of them: `{run.COMMAND}`)")


def test_freshness_tells_stale_from_never_stamped(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    path = tmp_path / "01_example.ipynb"
    nbformat.write(nb, path)
    assert "never stamped" in run.staleness(path)

    run.stamp(nb, 1.0, fast=False)
    nbformat.write(nb, path)
    assert run.staleness(path) is None

    nb.cells[0].source = "x = 2"
    nbformat.write(nb, path)
    assert "code cells changed" in run.staleness(path)

    nb.cells[0].source = "x = 1"
    nb.metadata[run.STAMP_KEY]["source_files"]["miniclip/model.py"] = "0" * 16
    nb.metadata[run.STAMP_KEY]["source"] = "0" * 16
    nbformat.write(nb, path)
    assert "source it ran against changed (miniclip/model.py)" in run.staleness(path)

    run.stamp(nb, 1.0, fast=True)
    nbformat.write(nb, path)
    assert "fast run" in run.staleness(path)


def test_progress_bars_are_collapsed():
    nbformat = pytest.importorskip("nbformat")
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr",
                                           text="start\n 10%|#  | 1/10\r 50%|##  | 5/10\r100%|###| 10/10\n")]
    run._clean_outputs(nbformat.v4.new_notebook(cells=[cell]))
    assert cell.outputs[0]["text"] == "start\n100%|###| 10/10\n"


def test_progress_bar_fragments_become_one_line():
    """The kernel sends each tqdm redraw as its own stream output (lesson 01 once saved 664 of
    them): they are joined and collapsed to the bar's final line, other outputs kept in order."""
    nbformat = pytest.importorskip("nbformat")
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="training\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="  0%|  | 0/10"),
                    *[nbformat.v4.new_output("stream", name="stderr", text=f"\r {10 * i}%|# | {i}/10")
                      for i in range(1, 11)],
                    nbformat.v4.new_output("stream", name="stderr", text="\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="done\n")]
    run._clean_outputs(nbformat.v4.new_notebook(cells=[cell]))
    assert [(o["name"], o["text"]) for o in cell.outputs] == [
        ("stdout", "training\n"), ("stderr", " 100%|# | 10/10\n"), ("stdout", "done\n")]
