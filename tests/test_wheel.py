"""A plain pip install, outside any clone, as in Colab, Kaggle or on a reviewer's server.

The package is built into a wheel from a copy of the repository's tracked files,
installed into a fresh virtual environment, and the series is run from an empty
folder with a fresh home directory:

1. the notebooks' setup cell, run where cityviz is missing, installs it (from the
   wheel, named by ``CITYVIZ_INSTALL``, with pip's index switched off), and run
   again, installs nothing;
2. ``python -m cityviz_helpers.tutorial --only 01`` runs notebook 01 (the quick
   profile, built-in cities) from the notebooks shipped in the wheel;
3. the same command runs all five notebooks on tiny real-format images;
4. nothing is written into site-packages, and everything goes to the home folder
   ``platformdirs`` names.

The fresh environment borrows the heavy dependencies (torch alone is several GB)
from the environment running the tests, through a ``.pth`` line that puts its
site-packages *after* the fresh one's: the wheel's cityviz is the one imported,
and the test environment's own editable install is not seen (a path added by a
``.pth`` line does not run that folder's ``.pth`` files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from cityviz_helpers import __version__
from cityviz_helpers.hosted import SETUP_CELL

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900  # 3x the slowest step measured here (the real-format series, about 100 s), rounded up


def run(cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if "__pycache__" not in p.parts and not p.name.endswith(".pyc")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv without cityviz, the wheel, a clean environment for commands)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    tracked = run(["git", "-C", str(ROOT), "ls-files", "-z"]).stdout.split("\0")
    for rel in filter(None, tracked):
        src, dst = ROOT / rel, source / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "-w", str(tmp / "dist"), str(source)])
    [wheel] = (tmp / "dist").glob(f"cityviz-{__version__}-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    # the venv's own old setuptools would shadow the borrowed one that torch's metadata asks for (>=77)
    run([str(python), "-m", "pip", "uninstall", "--yes", "--quiet", "setuptools"])
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    home = tmp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITYVIZ_", "PYTEST_", "XDG_", "JUPYTER"))}
    env.update(HOME=str(home), CITYVIZ_QUIET="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               MPLBACKEND="Agg")
    return python, site, wheel, env, tmp


def test_a_wheel_installs_and_runs_the_series_outside_a_clone(installed, real_world):
    python, site, wheel, env, tmp = installed
    work = tmp / "work"  # an empty folder: no clone, no notebooks
    work.mkdir()
    home = Path(env["HOME"]) / ".local" / "share" / "cityviz"  # platformdirs' user data folder on Linux
    setup = tmp / "setup_cell.py"
    setup.write_text(SETUP_CELL)

    # 1. the setup cell where cityviz is missing installs it; once there, it installs nothing
    missing = subprocess.run([str(python), "-c", "import cityviz_helpers"], cwd=work, env=env,
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "No module named 'cityviz_helpers'" in missing.stderr
    first = run([str(python), str(setup)], cwd=work, env={**env, "CITYVIZ_INSTALL": str(wheel)})
    assert f"cityviz {__version__}: data, models, artifacts and outputs in {home}" in first.stdout
    before = files_under(site)
    again = run([str(python), str(setup)], cwd=work, env={**env, "CITYVIZ_INSTALL": str(tmp / "no-such.whl")})
    assert str(home) in again.stdout  # an install from a missing file would have failed: none was tried
    where = run([str(python), "-c", "import cityviz_helpers as cv; print(cv.__file__)"], cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel's copy, not the clone's

    # 2. notebook 01 from the notebooks shipped in the wheel, quick profile, built-in cities
    one = run([str(python), "-m", "cityviz_helpers.tutorial", "--only", "01"], cwd=work, env=env)
    assert f"notebooks in {home / 'notebooks'}" in one.stdout
    assert sorted(p.name for p in (home / "notebooks").glob("*.ipynb"))[0] == "01_dataset_prep.ipynb"
    executed = home / "outputs" / "quick" / "notebooks" / "01_dataset_prep.ipynb"
    assert str(home) in executed.read_text()  # the setup cell said where the files go
    assert list((home / "artifacts" / "quick" / "synthetic").glob("dataset-*"))

    # 3. every notebook on tiny real-format images (random-weight models, as in test_real_data.py)
    real = {**env, "TORCH_HOME": str(real_world / "torch"), "CITYVIZ_OVERRIDES": str(real_world / "overrides.json")}
    run([str(python), "-m", "cityviz_helpers.tutorial", "--data", str(real_world / "osv5m")], cwd=work, env=real)
    [out] = [p for p in (home / "outputs").iterdir() if p.name.startswith("quick-osv5m-")]
    series = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))  # chapters and deep dives
    assert len(series) > 5 and sorted(p.name for p in (out / "notebooks").glob("*.ipynb")) == series
    assert "arch_vs_init" in json.loads((out / "results.json").read_text())

    # 4. nothing written into site-packages or the working folder; student versions go home too
    assert files_under(site) == before
    assert not any((site / name).exists() for name in ("artifacts", "outputs", "data", "models", "notebooks"))
    assert list(work.iterdir()) == []


def test_a_notebook_edited_at_home_is_kept(installed):
    python, site, wheel, env, tmp = installed
    env = {**env, "CITYVIZ_HOME": str(tmp / "own-home")}
    run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], env=env)
    mine = tmp / "own-home" / "notebooks" / "02_classifier_training.ipynb"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    done = run([str(python), "-c", "from cityviz_helpers.tutorial import notebook_dir; print(notebook_dir())"],
               cwd=tmp, env=env)
    assert "Kept your copy of 02_classifier_training.ipynb" in done.stdout
    assert mine.read_text().startswith('{"cells": []')
    assert (mine.parent / "01_dataset_prep.ipynb").is_file()
    refused = subprocess.run([str(python), "-m", "cityviz_helpers.tutorial", "--in-place"], cwd=tmp, env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "run it in a clone" in refused.stderr
