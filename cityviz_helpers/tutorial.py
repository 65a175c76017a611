"""Run the whole series headless: ``python -m cityviz_helpers.tutorial`` (``make tutorial``).

Executes the chapters ``notebooks/NN_*.ipynb`` and the deep dives ``notebooks/NNb_*.ipynb`` in order
(each deep dive after its chapter; no chapter reads what a deep dive writes) with the chosen profile, writes the
executed copies to ``outputs/<profile>/notebooks/`` (the figures and
``results.json`` are written by the notebooks themselves), records how long
each took in ``results.json`` under ``timings``, and prints where everything is.
``--in-place`` instead refreshes the committed notebooks' outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .results import merge_results
from .settings import REPO_ROOT, get_settings, home, in_clone
from .utils import HEADLESS_ENV, atomic_write

#: The series: chapters ``NN_name.ipynb`` and deep dives ``NNb_name.ipynb``; sorted by name, each
#: deep dive runs right after its chapter (``_`` sorts before ``b``).
SERIES_GLOB = "[0-9][0-9]*_*.ipynb"
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"

#: The notebooks that ship inside the package (in a clone, a link to the repository's ``notebooks/``).
SHIPPED = Path(__file__).resolve().parent / "notebooks"


def notebook_dir(verbose: bool = True) -> Path:
    """Where the series' notebooks are run from: the clone's ``notebooks/``; after a pip install,
    ``<home>/notebooks/`` (:func:`cityviz_helpers.settings.home`), filled from the copies shipped
    in the package. A notebook already there is never overwritten: when it differs from the
    shipped one (a student's edits, or an older release), it is kept and this says so."""
    if in_clone():
        return REPO_ROOT / "notebooks"
    import shutil

    folder = home() / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    shipped = sorted(SHIPPED.glob(SERIES_GLOB))
    if not shipped:
        raise SystemExit(f"This installation of cityviz has no notebooks in {SHIPPED}; reinstall it "
                         "(pip install cityviz) or run from a clone of the repository.")
    for nb in shipped:
        mine = folder / nb.name
        if not mine.exists():
            atomic_write(mine, lambda tmp, nb=nb: shutil.copyfile(nb, tmp))
        elif verbose and mine.read_bytes() != nb.read_bytes():
            print(f"Kept your copy of {nb.name} in {folder} (it differs from the one this cityviz ships; "
                  f"move yours away to get the shipped one, which is {nb}).")
    return folder


def notebooks(selection: list[str] | None = None, folder: Path | None = None) -> list[Path]:
    folder = folder or notebook_dir()
    found = sorted(folder.glob(SERIES_GLOB))
    if selection:
        found = [nb for nb in found if any(nb.name.startswith(s) for s in selection)]
        if not found:
            raise SystemExit(f"No notebook matches {selection}; the series has "
                             f"{', '.join(p.name for p in sorted(folder.glob('*.ipynb')))}.")
    if not found:
        raise SystemExit(f"No notebooks (NN_*.ipynb) in {folder}: nothing to run.")
    return found


#: Arguments for each notebook's kernel. Over TCP on 127.0.0.1, ipykernel (7.x) logs a warning per kernel
#: ("Kernel is running over TCP without encryption"); the channel never leaves this machine, so the
#: kernel application's own log is kept to errors. Warnings raised by the notebooks' code are not
#: affected: they go to the cells' outputs. (Tried first: CurveZMQ keys, ``transport_encryption='auto'``,
#: after which notebook 03 stalled with its kernel idle; Unix-socket transport, which nbclient could not
#: start.)
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


def _execute_in_place(path: Path, timeout: int) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", extra_arguments=KERNEL_ARGS,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    atomic_write(path, lambda tmp: nbformat.write(nb, tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="quick (default) or full; else $CITYVIZ_PROFILE")
    parser.add_argument("--data", default=None, help="synthetic (default) or an ImageFolder path; else $CITYVIZ_DATA")
    parser.add_argument("--only", nargs="*", help="run only notebooks whose names start with these, e.g. 01 02")
    parser.add_argument("--in-place", action="store_true", help="refresh the committed notebooks' outputs")
    parser.add_argument("--timeout", type=int, default=4500,
                        help="seconds allowed per cell (3x notebook 02's training cell on a 2-core CPU in float32)")
    args = parser.parse_args(argv)

    if args.in_place and not in_clone():
        parser.error("--in-place refreshes the repository's committed notebooks; run it in a clone.")
    settings = get_settings(args.profile, args.data)
    os.environ["CITYVIZ_PROFILE"] = settings.profile
    os.environ["CITYVIZ_DATA"] = settings.data
    os.environ[HEADLESS_ENV] = "1"  # the kernels it starts have no screen: explorers skip their controls
    out_dir = settings.outputs_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    folder = notebook_dir()
    print(f"Running the cityviz notebooks in {folder} with profile '{settings.profile}' on data "
          f"'{settings.data}'.")
    for nb in notebooks(args.only, folder):
        start = time.perf_counter()
        print(f"  {nb.name} ...", end=" ", flush=True)
        try:
            if args.in_place:
                _execute_in_place(nb, args.timeout)
            else:
                import papermill

                papermill.execute_notebook(str(nb), str(out_dir / nb.name), cwd=str(folder),
                                           parameters={"PROFILE": settings.profile, "DATA": settings.data},
                                           kernel_name="python3", progress_bar=False,
                                           execution_timeout=args.timeout, extra_arguments=KERNEL_ARGS)
        except Exception as err:  # say which notebook failed and where its partial output is
            print("FAILED")
            where = nb if args.in_place else out_dir / nb.name
            print(f"\n{nb.name} failed: {type(err).__name__}: {str(err)[-2000:]}\n"
                  f"The partly executed notebook is {where}; fix the cause and rerun "
                  "(finished steps are cached and load quickly).", file=sys.stderr)
            return 1
        seconds = time.perf_counter() - start
        timings[nb.stem] = round(seconds, 1)
        print(f"{seconds:.0f} s")
    merge_results(settings, "timings", timings)
    print(f"\nDone in {sum(timings.values()):.0f} s.")
    if not args.in_place:
        print(f"  executed notebooks: {out_dir}")
    print(f"  figures:            {settings.figures_dir}")
    print(f"  key numbers:        {settings.outputs_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
