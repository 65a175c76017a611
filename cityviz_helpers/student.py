"""Student versions of the notebooks: the solutions taken out (issue 18, item 2).

The committed notebooks hold the exercises *with* their solutions, marked as
nbgrader marks them, so that teachers recognise them::

    # Exercise 2: the masks at threshold 0.6
    ### BEGIN SOLUTION
    masks = maps > 0.6
    print(masks.mean())
    ### END SOLUTION

and in Markdown cells (where the HTML comments do not show)::

    <!-- BEGIN SOLUTION -->
    The masks shrink, because ...
    <!-- END SOLUTION -->

``make student`` (``python -m cityviz_helpers.student``) writes every notebook of
``notebooks/`` to ``outputs/student/`` with each marked region, markers
included, replaced by a stub, and the outputs and execution count of every cell
that had a solution cleared. Everything else is left byte for byte as it is
(the notebook's JSON is written as the committed notebooks are: one-space
indent, sorted keys, UTF-8, a final newline).

**The stub, and why it is not nbgrader's.** nbgrader puts ``raise
NotImplementedError()`` in place of a solution, so a student version stops at
the first unanswered exercise. Here a student version must run top to bottom
without error, each unanswered exercise saying so. So a code region becomes::

    # Exercise 2: write your answer here (the solution was removed from this version)
    print("Exercise 2: not answered yet")
    masks = None  # your answer sets this

The last line appears when the region is at the cell's top level and binds
names (assignments, ``def``, ``class``, ``import``, ``for`` and ``with``
targets): they are set to ``None``, so that a later cell that names them still
runs; a cell that checks an answer should say ``if masks is None: print(...)``.
Inside an indented block (a function body) the stub is the same two lines at the
region's indentation, so the block stays valid Python (and the function returns
``None``). A Markdown region becomes ``*Exercise 2: write your answer here.*``.
The exercise's number is the nearest "Exercise <n>" above the region (in the
same cell or the cells before it), else the region's position in the notebook.

What this asks of whoever writes the exercises: cells after an exercise must not
need its answer beyond the ``None`` check (the student version is executed by a
test to catch it). A marker that is unbalanced, nested, misspelt or of the other
cell type is an error naming the notebook, cell and line.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
import textwrap
from pathlib import Path

from .settings import home

CODE_BEGIN, CODE_END = "### BEGIN SOLUTION", "### END SOLUTION"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
#: a file in the output folder recording what this tool wrote (so that it never replaces a student's edits)
RECORD = ".student-versions.json"
_EXERCISE = re.compile(r"\bExercise\s+(\d+[a-z]?(?:\.\d+)?)", re.IGNORECASE)


class MarkerError(ValueError):
    """Solution markers that do not pair up; the message says where."""


def _source_text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell: dict, text: str) -> None:
    """Store ``text`` in the form the cell used (a list of lines or one string)."""
    cell["source"] = text.splitlines(keepends=True) if isinstance(cell.get("source"), list) else text


def _regions(lines: list[str], cell_type: str, where: str) -> list[tuple[int, int]]:
    """(begin, end) line indices of the solution regions, markers checked."""
    begin, end = (CODE_BEGIN, CODE_END) if cell_type == "code" else (MD_BEGIN, MD_END)
    other = (MD_BEGIN, MD_END) if cell_type == "code" else (CODE_BEGIN, CODE_END)
    regions, start = [], None
    for i, line in enumerate(lines):
        text = line.strip()
        at = f"{where}, line {i + 1}"
        if text == begin:
            if start is not None:
                raise MarkerError(f"{at}: '{begin}' again before the '{end}' of line {start + 1}'s region; "
                                  "solutions cannot nest: close the first one.")
            start = i
        elif text == end:
            if start is None:
                raise MarkerError(f"{at}: '{end}' without a '{begin}' before it; add the BEGIN line or "
                                  "remove this one.")
            regions.append((start, i))
            start = None
        elif text in other:
            kind = "code" if cell_type == "code" else "Markdown"
            raise MarkerError(f"{at}: {text!r} is the marker of the other cell type; in a {kind} cell write "
                              f"'{begin}' and '{end}'.")
        elif "BEGIN SOLUTION" in text.upper() or "END SOLUTION" in text.upper():
            raise MarkerError(f"{at}: {text!r} is not a marker; write exactly '{begin}' or '{end}' on a line "
                              "of its own.")
    if start is not None:
        raise MarkerError(f"{where}, line {start + 1}: '{begin}' has no '{end}' after it; add it at the end "
                          "of the solution.")
    return regions


def _bound_names(code: str) -> list[str]:
    """Names a block of code binds at its top level (empty when it does not parse alone)."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return []
    names: list[str] = []

    def targets(node):
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for t in stmt.targets:
                targets(t)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets(stmt.target)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"]
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            targets(stmt.target)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    targets(item.optional_vars)
    return list(dict.fromkeys(names))


def _label(cells: list[dict], index: int, lines_before: list[str], position: int) -> str:
    """"Exercise <n>": the nearest mention above the region, else its position."""
    for text in ["".join(lines_before)] + [_source_text(c) for c in reversed(cells[:index])]:
        found = _EXERCISE.findall(text)
        if found:
            return f"Exercise {found[-1]}"
    return f"Exercise {position}"


def _stub(cell_type: str, label: str, indent: str, names: list[str], newline: str) -> list[str]:
    if cell_type == "markdown":
        return [f"*{label}: write your answer here.*{newline}"]
    out = [f"{indent}# {label}: write your answer here (the solution was removed from this version)\n",
           f"{indent}print({(label + ': not answered yet')!r})" + ("\n" if names or newline else "")]
    if names:
        out.append(f"{indent}{' = '.join(names)} = None  # your answer sets {'this' if len(names) == 1 else 'these'}"
                   + newline)
    return out


def student_version(notebook: dict, name: str = "notebook") -> tuple[dict, int]:
    """A copy of a notebook (its JSON as a dict) with the solutions replaced by
    stubs; returns it and the number of regions replaced."""
    nb = json.loads(json.dumps(notebook))
    cells, count = nb.get("cells", []), 0
    for index, cell in enumerate(cells):
        if cell.get("cell_type") not in ("code", "markdown"):
            continue
        text = _source_text(cell)
        lines = text.splitlines(keepends=True)
        where = f"{name}, cell {index + 1}" + (f" (id {cell['id']})" if cell.get("id") else "")
        regions = _regions(lines, cell["cell_type"], where)
        if not regions:
            continue
        out, last = [], 0
        for begin, end in regions:
            count += 1
            out += lines[last:begin]
            marker = lines[begin]
            indent = marker[: len(marker) - len(marker.lstrip())]
            names = _bound_names("".join(lines[begin + 1:end])) if cell["cell_type"] == "code" and not indent \
                else []
            newline = "\n" if lines[end].endswith("\n") else ""
            out += _stub(cell["cell_type"], _label(cells, index, lines[:begin], count), indent, names, newline)
            last = end + 1
        out += lines[last:]
        _set_source(cell, "".join(out))
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb, count


def dumps(notebook: dict) -> str:
    """The notebook's JSON as Jupyter (and the committed notebooks) write it."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def make_student(source: str | Path | None = None, out: str | Path | None = None,
                 verbose: bool = True) -> dict[str, str]:
    """Write the student version of every ``*.ipynb`` in ``source`` (default
    ``notebooks/``) to ``out`` (default ``outputs/student/``, under
    ``CITYVIZ_OUTPUTS`` when set). Returns ``{name: what happened}``.

    A student version that is already there is replaced only if it is exactly
    what this tool wrote last time (recorded in ``.student-versions.json``); one
    that was changed since, e.g. a student's answers, is kept and reported.
    All markers of all notebooks are checked before anything is written.
    """
    if source is None:
        from .tutorial import notebook_dir

        source = notebook_dir()
    source = Path(source)
    if out is None:
        out = Path(os.environ.get("CITYVIZ_OUTPUTS", "").strip() or home() / "outputs") / "student"
    out = Path(out)
    paths = sorted(source.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"No notebooks (*.ipynb) in {source}.")
    made = {}
    for path in paths:  # every notebook checked first: a marker error writes nothing
        try:
            notebook = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path} is not a notebook ({err}).") from None
        made[path.name] = student_version(notebook, path.name)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    report = {}
    for name, (nb, count) in made.items():
        text = dumps(nb)
        dest = out / name
        digest = hashlib.sha256(text.encode()).hexdigest()
        if dest.exists():
            current = hashlib.sha256(dest.read_bytes()).hexdigest()
            if current == digest:
                report[name] = f"unchanged ({count} solutions removed)"
                record[name] = digest
                continue
            if record.get(name) != current:
                report[name] = ("KEPT: it was changed after `make student` wrote it (a student's work?); move it "
                                "away and run again to get the new version")
                continue
        tmp = dest.with_name(f".{name}.partial")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(dest)
        record[name] = digest
        report[name] = f"written, {count} solution{'s' if count != 1 else ''} removed"
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    if verbose:
        print(f"Student versions of {len(made)} notebooks in {out}:")
        for name, what in report.items():
            print(f"  {name}: {what}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cityviz_helpers.student",
                                     description="Write student versions of the notebooks (solutions removed).")
    parser.add_argument("--notebooks", help="folder of the teacher's notebooks (default: notebooks/)")
    parser.add_argument("--out", help="output folder (default: outputs/student/)")
    args = parser.parse_args(argv)
    try:
        make_student(args.notebooks, args.out)
    except (MarkerError, ValueError, FileNotFoundError) as err:
        print(f"make student: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

