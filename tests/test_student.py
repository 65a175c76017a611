"""Student versions of the notebooks (issue 18, item 2): solutions out, the rest unchanged, and they run."""

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from cityviz_helpers import student

REPO = Path(__file__).resolve().parent.parent


def teacher_notebook() -> nbformat.NotebookNode:
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("# A tiny lesson\nNothing to answer here."),
        v4.new_code_cell("x = 2\nprint(x)", execution_count=1,
                         outputs=[v4.new_output("stream", name="stdout", text="2\n")]),
        v4.new_markdown_cell("### Exercise 1\nMultiply `x` by three."),
        v4.new_code_cell("# your answer\n### BEGIN SOLUTION\ny = 3 * x\nimport math as m\nprint(y)\n### END SOLUTION",
                         execution_count=2, outputs=[v4.new_output("stream", name="stdout", text="6\n")]),
        v4.new_markdown_cell("### Exercise 2\nWrite `bump`."),
        v4.new_code_cell("def bump(a):\n    ### BEGIN SOLUTION\n    return a + 1\n    ### END SOLUTION\n"
                         "print('bump is defined')"),
        v4.new_markdown_cell("Why three?\n<!-- BEGIN SOLUTION -->\nBecause the exercise says so.\n"
                             "<!-- END SOLUTION -->\nThe end."),
        v4.new_code_cell("print(x + 1)\nif y is None:\n    print('no answer to exercise 1 yet')\nelse:\n"
                         "    print('y =', y, m.pi > 3)"),
    ]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write(nb, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


def run(nb) -> nbformat.NotebookNode:
    """Execute top to bottom (raises on the first failing cell)."""
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    return nb


def stream(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_student_version_differs_only_in_solution_cells_and_runs(tmp_path):
    teacher = teacher_notebook()
    src = tmp_path / "notebooks"
    src.mkdir()
    write(teacher, src / "01_tiny.ipynb")
    report = student.make_student(src, tmp_path / "student", verbose=False)
    assert report == {"01_tiny.ipynb": "written, 3 solutions removed"}
    out = json.loads((tmp_path / "student" / "01_tiny.ipynb").read_text())
    original = json.loads((src / "01_tiny.ipynb").read_text())

    solution_cells = {3, 5, 6}
    assert len(out["cells"]) == len(original["cells"]) and out["metadata"] == original["metadata"]
    for i, (a, b) in enumerate(zip(original["cells"], out["cells"])):
        if i not in solution_cells:
            assert a == b, f"cell {i} changed"
        else:
            assert a["source"] != b["source"] and "SOLUTION" not in "".join(b["source"])
            assert {k: v for k, v in a.items() if k not in ("source", "outputs", "execution_count")} == \
                {k: v for k, v in b.items() if k not in ("source", "outputs", "execution_count")}
    src3, src5, src6 = ("".join(out["cells"][i]["source"]) for i in (3, 5, 6))
    assert src3 == ("# your answer\n# Exercise 1: write your answer here (the solution was removed from this "
                    "version)\nprint('Exercise 1: not answered yet')\ny = m = None  # your answer sets these")
    assert out["cells"][3]["outputs"] == [] and out["cells"][3]["execution_count"] is None
    assert out["cells"][1]["outputs"] == original["cells"][1]["outputs"]  # other outputs stay
    assert src5.startswith("def bump(a):\n    # Exercise 2: write your answer here") and \
        "    print('Exercise 2: not answered yet')\nprint('bump is defined')" in src5
    assert src6 == "Why three?\n*Exercise 2: write your answer here.*\nThe end."

    start = time.perf_counter()
    run(teacher)  # the teacher's version runs: the test notebook is sound
    ran = run(nbformat.reads(json.dumps(out), as_version=4))
    assert "Exercise 1: not answered yet" in stream(ran.cells[3])
    assert stream(ran.cells[5]) == "bump is defined\n"
    assert stream(ran.cells[7]) == "3\nno answer to exercise 1 yet\n"
    assert stream(teacher.cells[7]) == "3\ny = 6 True\n"
    assert time.perf_counter() - start < 60


def test_rerun_replaces_its_own_files_and_keeps_edited_ones(tmp_path, capsys):
    src, dest = tmp_path / "notebooks", tmp_path / "student"
    src.mkdir()
    write(teacher_notebook(), src / "01_tiny.ipynb")
    write(teacher_notebook(), src / "02_tiny.ipynb")
    student.make_student(src, dest, verbose=False)
    assert student.make_student(src, dest, verbose=False)["01_tiny.ipynb"].startswith("unchanged")

    edited = (dest / "02_tiny.ipynb").read_text().replace("not answered yet", "my answer")
    (dest / "02_tiny.ipynb").write_text(edited)
    nb = teacher_notebook()
    nb.cells[0].source = "# A tiny lesson, revised"
    write(nb, src / "01_tiny.ipynb")
    write(nb, src / "02_tiny.ipynb")
    report = student.make_student(src, dest)
    assert report["01_tiny.ipynb"].startswith("written")
    assert "revised" in (dest / "01_tiny.ipynb").read_text()
    assert report["02_tiny.ipynb"].startswith("KEPT") and (dest / "02_tiny.ipynb").read_text() == edited
    assert "02_tiny.ipynb: KEPT" in capsys.readouterr().out


@pytest.mark.parametrize("cell_type, source, message", [
    ("code", "### BEGIN SOLUTION\ny = 1\n", "line 1: '### BEGIN SOLUTION' has no '### END SOLUTION' after it"),
    ("code", "y = 1\n### END SOLUTION\n", "line 2: '### END SOLUTION' without a '### BEGIN SOLUTION'"),
    ("code", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "line 2: '### BEGIN SOLUTION' again"),
    ("code", "#### BEGIN SOLUTION\ny = 1\n### END SOLUTION\n", "line 1: '#### BEGIN SOLUTION' is not a marker"),
    ("markdown", "### BEGIN SOLUTION\ntext\n### END SOLUTION\n", "marker of the other cell type"),
    ("markdown", "<!-- BEGIN SOLUTION -->\ntext\n", "'<!-- BEGIN SOLUTION -->' has no '<!-- END SOLUTION -->'"),
])
def test_unbalanced_or_misspelt_markers_are_a_clear_error(tmp_path, cell_type, source, message, capsys):
    nb = teacher_notebook()
    new = nbformat.v4.new_code_cell if cell_type == "code" else nbformat.v4.new_markdown_cell
    nb.cells.insert(2, new(source))
    src = tmp_path / "notebooks"
    src.mkdir()
    write(nb, src / "03_bad.ipynb")
    with pytest.raises(student.MarkerError) as err:
        student.make_student(src, tmp_path / "student", verbose=False)
    assert str(err.value).startswith(f"03_bad.ipynb, cell 3 (id {nb.cells[2].id}), ") and message in str(err.value)
    assert not (tmp_path / "student").exists()  # nothing written
    assert student.main(["--notebooks", str(src), "--out", str(tmp_path / "student")]) == 1
    assert "make student: 03_bad.ipynb, cell 3" in capsys.readouterr().err


def test_the_committed_notebooks_keep_every_cell_outside_solutions(tmp_path):
    """Read-only on notebooks/: their student versions change solution cells only (none without
    markers, where the file is byte for byte the same)."""
    paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert len(paths) >= 5
    for path in paths:
        text = path.read_text(encoding="utf-8")
        original = json.loads(text)
        out, count = student.student_version(original, path.name)
        changed = [i for i, (a, b) in enumerate(zip(original["cells"], out["cells"])) if a != b]
        has_markers = [i for i, c in enumerate(original["cells"]) if "SOLUTION" in "".join(c["source"])]
        assert changed == [i for i in has_markers if i in changed] and len(out["cells"]) == len(original["cells"])
        if count == 0:
            assert student.dumps(out) == text, path.name
