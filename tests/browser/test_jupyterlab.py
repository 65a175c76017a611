"""The interactive explorers of notebooks 03 and 04 work in a real JupyterLab.

``make browser-test`` (run by ``make test`` after nbval) starts JupyterLab on
127.0.0.1 (a free port, a token, temporary Jupyter folders, no browser of its
own) and opens copies of the notebooks in headless Chromium. In each it runs the
cells up to and including the ipywidgets explorer (what a student has run on
reaching it; the cells after it, exercises included, are nbval's), waits until
the kernel is idle, moves one control of the explorer and checks that its figure
is redrawn. Screenshots of the explorer before and after go to
``outputs/browser/``; a failure saves a screenshot of the page and JupyterLab's
log there and prints their paths.

Needs: Debian's ``chromium`` (``apt-get install chromium``; ``$CITYVIZ_CHROMIUM``
names another binary), Playwright from PyPI (the dev extras; its own browser
download is not used) and the filled artifact cache (nbval fills it earlier in
``make test``), so the notebooks load their models instead of training them.
``tests/browser/conftest.py`` keeps plain ``pytest tests`` from collecting this file.
"""

from __future__ import annotations

import base64
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_ENV = dict(os.environ)  # before tests/conftest.py points CITYVIZ_ARTIFACTS/OUTPUTS at temporary folders
ARTIFACTS_ROOT = Path(_ENV.get("CITYVIZ_ARTIFACTS") or REPO / "artifacts")
SHOTS = Path(_ENV.get("CITYVIZ_OUTPUTS") or REPO / "outputs") / "browser"

# Every wait is 3x what it took here, and at least 10 s (a sub-second wait on a shared machine
# can take a few seconds). Measured 2026-11-25 on this 2-core machine while other jobs kept it
# loaded (load average 9-11), with the cache filled, JupyterLab 4.6 and Chromium 156; the longest
# of 2-5 runs, in seconds:
MEASURED_S = {
    "launch": 0.6,  # Playwright starts Chromium
    "server": 6.6,  # JupyterLab answers /api/status
    "stop": 1.2,  # JupyterLab and its kernels exit after SIGTERM
    "open": 11.0,  # the notebook page is loaded and its kernel idle
    "run_03": 75.1,  # notebook 03 run through its explorer (every step from the cache), kernel idle
    "run_04": 274.8,  # the same for notebook 04 (it clusters all 8 models before its explorer)
    "figure": 0.3,  # the explorer shows its first figure
    "update": 1.4,  # the figure is redrawn after a control moved, kernel idle
}
TIMEOUT_MS = {k: int(max(3 * v, 10) * 1000) for k, v in MEASURED_S.items()}
POLL_MS = 250  # page checks every 250 ms (Playwright's default, every animation frame, costs CPU)

INSTALL_CHROMIUM = "Install it with `apt-get update && apt-get install -y chromium` (Debian; .ci/run does this)"
INSTALL_PLAYWRIGHT = ("Install it with `.venv/bin/pip install -e '.[dev]'` (Playwright's own browser download "
                      "is not needed: the test drives Debian's chromium)")


def chromium_path() -> str:
    """The Chromium binary (Debian's package), or a failure that says how to get it."""
    named = _ENV.get("CITYVIZ_CHROMIUM")
    if named:
        if not Path(named).is_file():
            pytest.fail(f"CITYVIZ_CHROMIUM={named} is not a file; unset it or point it at a Chromium binary.")
        return named
    for candidate in ("chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail(f"The browser test needs Chromium, and no `chromium` is on PATH. {INSTALL_CHROMIUM}.")


def check_cache() -> None:
    """Fail at once (not after a timeout) where the classifiers of these settings are not cached."""
    from cityviz_helpers.settings import get_settings

    settings = get_settings()
    models = ARTIFACTS_ROOT / settings.profile / settings.dataset_name / "models"
    train = settings["train"]
    missing = [f"{a}-s{s}" for a in train["archs"] for s in train["seeds"]
               if not any(models.glob(f"{a}-s{s}-*/model.json"))]
    if missing:
        pytest.fail(f"No cached classifier for {', '.join(missing)} under {models}. The browser test runs "
                    "notebooks 03 and 04 from the cache: run the notebooks first (`make test` runs nbval "
                    "before it; or `make tutorial`), with the same CITYVIZ_PROFILE and CITYVIZ_DATA.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_copy(src: Path, dst: Path) -> None:
    """A copy without outputs or saved widget state, so only this run's figures can be seen."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, dst)


def write_lab_settings(folder: Path) -> None:
    """No news or update check (no network here; their pop-up would cover the notebook)."""
    target = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    target.parent.mkdir(parents=True)
    target.write_text('{"fetchNews": "false", "checkForUpdates": false}\n')


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path


@pytest.fixture(scope="module")
def lab():
    check_cache()
    tmp = Path(tempfile.mkdtemp(prefix="cityviz-lab-"))
    root = tmp / "notebooks"
    root.mkdir()
    for stem in ("03_", "04_"):
        (src,) = sorted((REPO / "notebooks").glob(f"{stem}*.ipynb"))
        clean_copy(src, root / src.name)
    write_lab_settings(tmp / "lab-settings")
    port, token = free_port(), secrets.token_hex(16)
    # inline figures; a student's JupyterLab, where the explorers show their controls
    env = {k: v for k, v in _ENV.items() if k not in ("MPLBACKEND", "JUPYTER_PATH", "CITYVIZ_HEADLESS")}
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), IPYTHONDIR=str(tmp / "ipython"),
               CITYVIZ_ARTIFACTS=str(ARTIFACTS_ROOT), CITYVIZ_OUTPUTS=str(tmp / "outputs"),  # results.json stays put
               CITYVIZ_QUIET="1")
    log = tmp / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    try:
        deadline = time.monotonic() + TIMEOUT_MS["server"] / 1000
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode}; its log:\n{log.read_text()[-3000:]}")
            try:
                request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(request, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {url} within {TIMEOUT_MS['server'] / 1000:.0f} s; "
                                f"its log:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
        print(f"\nJupyterLab answered on {url} after {time.perf_counter() - started:.1f} s")
        yield Lab(url, token, root, log)
    finally:
        if proc.poll() is None:  # the server shuts its kernels down on SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
            stopping = time.perf_counter()
            try:
                proc.wait(timeout=TIMEOUT_MS["stop"] / 1000)
                print(f"\nJupyterLab stopped {time.perf_counter() - stopping:.1f} s after SIGTERM")
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"The browser test needs the Python package playwright. {INSTALL_PLAYWRIGHT}.")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=executable, headless=True, timeout=TIMEOUT_MS["launch"])
        except Exception as err:
            pytest.fail(f"Chromium at {executable} did not start under Playwright: {err}\n{INSTALL_CHROMIUM}.")
        yield chromium
        chromium.close()


# JavaScript run in the page (JupyterLab exposes its application as window.jupyterapp).
CURRENT = "window.jupyterapp && window.jupyterapp.shell.currentWidget"
KERNEL_IDLE = f"""() => {{ const w = {CURRENT};
  return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
            && w.sessionContext.session.kernel.status === 'idle'); }}"""
OPENED = f"""(path) => {{ const w = {CURRENT};
  return !!(w && w.context && w.context.path === path && w.context.isReady && w.sessionContext
            && w.sessionContext.session && w.sessionContext.session.kernel
            && w.sessionContext.session.kernel.status === 'idle'); }}"""
RUN_THROUGH = """(index) => { window.__cityviz_run = null;
  const app = window.jupyterapp, nb = app.shell.currentWidget.content;
  const select = () => { nb.activeCellIndex = index; nb.deselectAll(); };
  select();
  app.commands.execute('notebook:run-all-above')
    .then(ok => { if (!ok) return false; select(); return app.commands.execute('notebook:run-cell'); })
    .then(ok => { window.__cityviz_run = ok ? 'ok' : 'a cell failed'; },
          err => { window.__cityviz_run = 'error: ' + err; }); }"""
CELL_REPORT = f"""(last) => {{ const nb = {CURRENT}.content; const errors = []; let unrun = 0;
  nb.widgets.forEach((cell, index) => {{
    if (cell.model.type !== 'code' || index > last) return;
    if (cell.model.executionCount === null) unrun += 1;
    for (let i = 0; i < cell.model.outputs.length; i++) {{
      const o = cell.model.outputs.get(i).toJSON();
      if (o.output_type !== 'error') continue;
      if (!errors.length) cell.node.scrollIntoView();  // for the failure's screenshot
      errors.push('cell ' + index + ': ' + o.ename + ': ' + o.evalue);
    }}
  }});
  return {{errors, unrun}}; }}"""
RUNNING = f"""() => {{ const w = {CURRENT}; const out = [];
  if (!w || !w.content || !w.content.widgets) return out;
  w.content.widgets.forEach((cell, i) => {{
    const prompt = cell.node.querySelector('.jp-InputPrompt');
    if (cell.model.type === 'code' && prompt && prompt.textContent.includes('*')) {{
      const area = cell.node.querySelector('.jp-OutputArea');
      out.push('cell ' + i + ' [' + cell.model.sharedModel.getSource().split('\\n')[0].slice(0, 80) + '], output: '
               + (area ? area.innerText.slice(-300) : ''));
    }}
  }});
  return out; }}"""
FIGURE = ".widget-interact .widget-output img"


def figure_src(page) -> str:
    images = page.locator(FIGURE)
    assert images.count() == 1, f"the explorer shows {images.count()} images, expected its one figure"
    return images.get_attribute("src")


def decode(src: str):
    from PIL import Image

    assert src.startswith("data:image/png;base64,"), f"the figure is not an inline PNG: {src[:60]}"
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")


def changed_fraction(a, b) -> float:
    import numpy as np

    w, h = min(a.width, b.width), min(a.height, b.height)  # a redrawn figure may differ in size a little
    a, b = np.asarray(a.crop((0, 0, w, h)), int), np.asarray(b.crop((0, 0, w, h)), int)
    return float((np.abs(a - b).max(axis=2) > 16).mean())


def explorer_index(path: Path) -> int:
    """The index of the notebook's one cell that builds an ipywidgets explorer."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    found = [i for i, c in enumerate(cells) if c.cell_type == "code" and "widgets.interactive(" in c.source]
    assert len(found) == 1, (f"{path.name} has {len(found)} cells calling widgets.interactive(, expected the "
                             "explorer's one; update EXPLORERS in this test to the notebook's explorer")
    return found[0]


@dataclass
class Explorer:
    notebook: str  # file name prefix
    control: str  # the label of the control the test moves
    kind: str  # "dropdown" or "slider"


EXPLORERS = [Explorer("03_", "city", "dropdown"), Explorer("04_", "cluster", "slider")]


@pytest.mark.parametrize("explorer", EXPLORERS, ids=lambda e: e.notebook.rstrip("_"))
def test_explorer_redraws_its_figure(browser, lab, explorer):
    (nb_path,) = sorted(lab.root.glob(f"{explorer.notebook}*.ipynb"))
    name, stem = nb_path.name, nb_path.stem
    explorer_cell = explorer_index(nb_path)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS["update"])
    timings = {}
    try:
        start = time.perf_counter()
        page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}", timeout=TIMEOUT_MS["open"])
        page.wait_for_function(OPENED, arg=name, timeout=TIMEOUT_MS["open"], polling=POLL_MS)
        timings["open"] = time.perf_counter() - start

        start = time.perf_counter()
        page.evaluate(RUN_THROUGH, explorer_cell)
        run_key = f"run_{explorer.notebook.rstrip('_')}"
        page.wait_for_function("() => window.__cityviz_run !== null", timeout=TIMEOUT_MS[run_key], polling=POLL_MS)
        page.wait_for_function(KERNEL_IDLE, timeout=TIMEOUT_MS[run_key], polling=POLL_MS)
        timings[run_key] = time.perf_counter() - start
        outcome, report = page.evaluate("() => window.__cityviz_run"), page.evaluate(CELL_REPORT, explorer_cell)
        assert outcome == "ok" and not report["errors"] and not report["unrun"], (
            f"Running {name} through its explorer (cell {explorer_cell}): {outcome}; errors {report['errors']}; "
            f"{report['unrun']} code cells not run")

        start = time.perf_counter()
        explorer_box = page.locator(".widget-interact")
        assert explorer_box.count() == 1, f"{name} shows {explorer_box.count()} ipywidgets explorers, expected 1"
        explorer_box.scroll_into_view_if_needed(timeout=TIMEOUT_MS["figure"])
        page.locator(FIGURE).wait_for(state="visible", timeout=TIMEOUT_MS["figure"])
        timings["figure"] = time.perf_counter() - start
        before = figure_src(page)
        explorer_box.screenshot(path=SHOTS / f"{stem}-before.png")

        start = time.perf_counter()
        control = explorer_box.locator(f".widget-{explorer.kind}").filter(
            has=page.locator("label", has_text=explorer.control))
        assert control.count() == 1, f"no single '{explorer.control}' {explorer.kind} in the explorer of {name}"
        if explorer.kind == "dropdown":
            select = control.locator("select")
            old = select.input_value()
            options = [o for o in select.locator("option").all_inner_texts() if o != old]
            select.select_option(label=options[0])
            moved_to = options[0]
        else:  # a slider moves one step with the arrow key, as a keyboard user would move it
            old = control.locator(".widget-readout").inner_text()
            control.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowRight")
            moved_to = control.locator(".widget-readout").inner_text()
            assert moved_to != old, f"the '{explorer.control}' slider did not move from {old}"
        page.wait_for_function(
            """([selector, before]) => { const im = document.querySelectorAll(selector);
                 return im.length === 1 && im[0].getAttribute('src') !== before; }""",
            arg=[FIGURE, before], timeout=TIMEOUT_MS["update"], polling=POLL_MS)
        page.wait_for_function(KERNEL_IDLE, timeout=TIMEOUT_MS["update"], polling=POLL_MS)
        timings["update"] = time.perf_counter() - start
        after = figure_src(page)
        explorer_box.screenshot(path=SHOTS / f"{stem}-after.png")

        fraction = changed_fraction(decode(before), decode(after))
        print(f"\n{name}: {explorer.control} {old} -> {moved_to}; {fraction:.0%} of the figure's pixels changed; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
              + f"; screenshots {SHOTS / (stem + '-before.png')} and -after.png")
        assert fraction > 0.01, (f"moving '{explorer.control}' in {name} changed only {fraction:.2%} of the "
                                 "figure's pixels")
        errors = explorer_box.locator('.widget-output [data-mime-type="application/vnd.jupyter.stderr"]')
        assert errors.count() == 0, f"the explorer of {name} printed an error: {errors.first.inner_text()[:500]}"
        kernel = page.evaluate(f"() => {CURRENT}.sessionContext.session.kernel.id")
        urllib.request.urlopen(urllib.request.Request(  # free its memory before the next notebook
            f"{lab.url}/api/kernels/{kernel}", method="DELETE", headers={"Authorization": f"token {lab.token}"}),
            timeout=TIMEOUT_MS["update"] / 1000)
    except BaseException:
        shot, log = SHOTS / f"{stem}-FAILED.png", SHOTS / f"{stem}-FAILED-jupyterlab.log"
        shutil.copyfile(lab.log, log)
        print(f"\nThe browser test failed on {name} after these steps: "
              + (", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) or "none") + f". JupyterLab's log: {log}")
        try:
            print("Cells still running: " + ("; ".join(page.evaluate(RUNNING)) or "none"))
            page.screenshot(path=shot, full_page=True)
            print(f"Screenshot of the page: {shot}")
        except Exception as err:  # the page itself is gone: say so, keep the original failure
            print(f"No screenshot could be taken ({err}).")
        raise
    finally:
        page.close()
