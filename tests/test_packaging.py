"""The package as pip installs it: a built wheel carries miniclip's vocabulary
and trains from outside the source tree (no repo-root files needed)."""
import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VOCAB = "miniclip/data/miniclip_bpe.txt.gz"


def build_wheel(tmp_path):
    """Build the wheel from a copy of the sources (nothing is written into the repo)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "miniclip", src / "miniclip",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, text=True)
    wheels = list((tmp_path / "dist").glob("miniclip-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_the_vocabulary_and_it_loads_from_site_packages(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert VOCAB in names, f"{VOCAB} is not in the wheel: declare it as package_data"
    assert not any(n.startswith("data/") for n in names)       # nothing outside the package

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", str(site), str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import miniclip, sys; from miniclip.tokenizer import Tokenizer; "
            "print(miniclip.__file__); print(len(Tokenizer.default()))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=elsewhere, check=True,
                         capture_output=True, text=True,
                         env={"PYTHONPATH": f"{site}:{':'.join(p for p in sys.path if 'site-packages' in p)}"})
    where, size = out.stdout.split()
    assert Path(where).is_relative_to(site)                      # the installed copy, not the repo
    assert int(size) > 600


def test_plots_come_with_the_package():
    """matplotlib (curves.png, similarity.png) is installed by `pip install miniclip`."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requires = [line.split(">")[0].strip() for line in config["options"]["install_requires"].split("\n")]
    assert "matplotlib" in requires
