"""A class that skips training: the teacher's pack served over HTTP, a fresh seat, the whole series.

    python benchmarks/bench_pack_url.py [--only 05] [--json FILE]

Packs the finished quick run in this checkout's artifact cache (``make tutorial`` or
``make test`` fill it), serves the archive and its ``.sha256`` from a web server on
127.0.0.1 (the tests' static-file stand-in: ranges, a redirect from the address the
teacher hands out to the stored file), then, in a fresh home folder
(``CITYVIZ_HOME`` in a temporary directory: no data, no models, no cache), runs the
notebooks with ``CITYVIZ_PACK`` set to that address, as a Colab class would. Each
notebook's setup cell fetches and installs the pack (the first) or finds it
installed (the others). Prints the seconds to pack, to run each notebook, and in
all from the fresh seat; checks that the seat trained and computed nothing (its
artifact cache holds exactly the pack's folders). A last line holds the figures as
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the loopback static host of the tests


def run(only: list[str] | None = None, timeout: int = 3600, verbose: bool = True) -> dict:
    from httpfixture import FileServer

    from cityviz_helpers import labkit
    from cityviz_helpers.settings import get_settings

    say = print if verbose else (lambda *a, **k: None)
    settings = get_settings("quick", "synthetic")
    with tempfile.TemporaryDirectory(prefix="cityviz-pack-url-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        archive = labkit.pack(settings, output_dir=tmp / "teacher", verbose=False)
        packed = time.perf_counter() - start
        size_mb = archive.stat().st_size / 1e6
        say(f"packed {archive.name} ({size_mb:.0f} MB) in {packed:.0f} s", flush=True)
        side = archive.with_name(archive.name + ".sha256")
        files = {f"/files/{archive.name}": archive.read_bytes(), f"/files/{side.name}": side.read_bytes()}
        with FileServer(files) as server:
            server.redirects = {f"/class/{archive.name}": f"/files/{archive.name}",
                                f"/class/{side.name}": f"/files/{side.name}"}
            url = f"{server.url}/class/{archive.name}"
            seat = tmp / "seat"
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("CITYVIZ_ARTIFACTS", "CITYVIZ_OUTPUTS", "CITYVIZ_DATA", "PYTEST_"))}
            env.update(CITYVIZ_HOME=str(seat), CITYVIZ_PACK=url, CITYVIZ_PROFILE="quick", CITYVIZ_QUIET="1")
            cmd = [sys.executable, "-m", "cityviz_helpers.tutorial", "--timeout", str(timeout)]
            if only:
                cmd += ["--only", *only]
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"The series failed on the fresh seat:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            fetched = [p for p, _ in server.log if p == f"/files/{archive.name}"]
        recorded = json.loads((seat / "outputs" / "quick" / "results.json").read_text())["timings"]
        timings = {k: v for k, v in recorded.items() if isinstance(v, (int, float))}  # a settings hash rides along
        for name, s in timings.items():
            say(f"  {name}: {s:.0f} s", flush=True)
        say(f"fresh seat, pack fetched from {server.url}, the notebooks run: {seconds:.0f} s in all", flush=True)
        manifest = labkit._read_manifest(labkit._open(archive), archive)
        packed_units = sorted(u["path"] for u in manifest["artifacts"])
        seat_root = seat / "artifacts" / settings.profile / settings.dataset_name  # as the seat's home lays it out
        on_seat = sorted([f"models/{p.name}" for p in (seat_root / "models").iterdir()] +
                         [p.name for p in seat_root.iterdir() if p.name != "models" and not p.name.startswith(".")])
        computed = sorted(set(on_seat) - set(packed_units))
        say("the seat computed nothing: its cache holds exactly the pack's folders" if not computed else
            f"the seat computed {len(computed)} folder(s) the pack lacks: {', '.join(computed)}", flush=True)
        return {"pack_s": round(packed, 1), "pack_mb": round(size_mb, 1), "series_s": round(seconds, 1),
                "notebooks_s": timings, "transfers": len(fetched), "computed_on_seat": computed,
                "packed_units": len(packed_units)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="run only these notebooks (e.g. 05); default all")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    figures = run(args.only)
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures) + "\n")
    return 0 if not figures["computed_on_seat"] else 1


if __name__ == "__main__":
    sys.exit(main())
