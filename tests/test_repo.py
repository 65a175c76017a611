"""The repository as a whole: requirements, committed notebooks, entry points."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from cityviz_helpers import __version__
from cityviz_helpers.hosted import DEFAULT_INSTALL, SETUP_CELL

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # conda-forge's name, if listed in the conda section


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_pins_every_requirement_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [_name(r) for r in project["dependencies"] + extras["lab"] + extras["dev"] if _name(r) != "cityviz"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pinned = {}
    for dep in env["dependencies"]:
        for item in (dep["pip"] if isinstance(dep, dict) else [dep]):
            if item.startswith("-e") or item == "pip":  # the package itself; the installer
                continue
            m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(==|=)\s*([0-9][^\s]*)$", item)
            assert m, f"environment.yml entry {item!r} is not pinned to a version"
            pinned[m.group(1).lower().replace("_", "-")] = m.group(3)
    missing = [n for n in wanted if n not in pinned and CONDA_NAMES.get(n) not in pinned]
    assert not missing, f"environment.yml lacks {missing}"


def test_committed_notebooks_are_clean_top_to_bottom_runs():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    assert notebooks, "no notebooks found"
    for nb_path in notebooks:
        nb = json.loads(nb_path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
        assert "".join(code[0]["source"]) == SETUP_CELL, f"{nb_path.name}: the first code cell must be the setup cell"
        assert "parameters" in code[1].get("metadata", {}).get("tags", []), f"{nb_path.name}: the second code cell must be the parameters cell"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{nb_path.name} holds an error output: {errors[0].get('ename')}"
        counts = [c.get("execution_count") for c in code]
        assert None not in counts and counts == sorted(counts), f"{nb_path.name}: outputs are not from one top-to-bottom run"
        assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
                   for c in code for o in c.get("outputs", [])), f"{nb_path.name} has no figure output"


def test_tutorial_runner_help():
    out = subprocess.run([sys.executable, "-m", "cityviz_helpers.tutorial", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--profile" in out and "--in-place" in out


def test_hosted_install_is_pinned_to_this_release_and_asks_for_no_jupyter():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    assert DEFAULT_INSTALL.endswith(f"@v{__version__}"), DEFAULT_INSTALL
    runtime = {_name(r) for r in project["dependencies"]}
    assert "jupyterlab" not in runtime and "jupyterlab" in {_name(r) for r in project["optional-dependencies"]["lab"]}
    for spec in project["dependencies"]:  # lower bounds only: a hosted runtime keeps what it has
        assert "==" not in spec and "<" not in spec, spec


CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DEEP_DIVES = sorted((ROOT / "notebooks").glob("[0-9][0-9]b_*.ipynb"))
#: A typed result in prose: a decimal (0.71, .5) or a percentage (27 %); formulas ($...$) and code
#: spans (`...`) are left out, since they hold symbols and settings' names, not results.
TYPED_RESULT = re.compile(r"(?<![\w.])(?:\d*\.\d+|\d+(?:\.\d+)?\s?%)")


def _cells(path, kind):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


def test_each_chapter_fits_a_lab_slot_with_its_time_marked_and_one_exercise():
    assert [p.name[:2] for p in CHAPTERS] == ["01", "02", "03", "04", "05"]
    for path in CHAPTERS:
        code = [c for c in _cells(path, "code") if c.strip()]
        lines = sum(1 for c in code for line in c.splitlines() if line.strip())
        assert len(code) <= 25 and lines <= 250, f"{path.name}: {len(code)} code cells, {lines} lines"
        markdown = _cells(path, "markdown")
        minutes = re.search(r"Estimated time[^0-9]*(\d+) minutes", markdown[0])
        assert minutes and int(minutes.group(1)) <= 45, f"{path.name}: no estimated time of at most 45 minutes on top"
        untimed = [m.splitlines()[0] for m in markdown if m.startswith("## ") and "minute" not in m]
        assert not untimed, f"{path.name}: sections without their time: {untimed}"
        exercises = [m.splitlines()[0] for m in markdown if m.startswith("#") and "Exercise" in m.splitlines()[0]]
        solutions = sum(c.count("<!-- BEGIN SOLUTION -->") for c in markdown) + \
            sum(c.count("### BEGIN SOLUTION") for c in code)
        assert len(exercises) == 1 and solutions >= 1, f"{path.name}: exercises {exercises}, {solutions} solutions"


def test_each_deep_dive_follows_its_chapter_and_no_chapter_reads_it():
    assert DEEP_DIVES, "no deep-dive notebooks"
    chapters = {p.name[:2] for p in CHAPTERS}
    for path in DEEP_DIVES:
        assert path.name[:2] in chapters, f"{path.name} has no chapter {path.name[:2]}"
        assert re.search(r"Estimated time[^0-9]*\d+ minutes", _cells(path, "markdown")[0]), path.name
    for path in CHAPTERS:  # a chapter may point to a deep dive in prose, never run or load from one
        for source in _cells(path, "code"):
            assert not re.search(r"\d\db_", source), f"{path.name} uses a deep dive: {source[:80]}"


def test_no_typed_result_numbers_in_the_notebooks_prose():
    for path in CHAPTERS + DEEP_DIVES:
        for text in _cells(path, "markdown"):
            prose = re.sub(r"\$[^$]*\$|`[^`]*`|\([^)]*\.(?:md|ipynb|html)[^)]*\)|https?://\S+|arXiv:\S+", "", text)
            found = TYPED_RESULT.findall(prose)
            assert not found, f"{path.name}: typed numbers {found} in: {text[:100]!r}"
