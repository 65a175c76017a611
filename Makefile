# cityviz: the two commands a student needs are `make tutorial` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= $(or $(CITYVIZ_PROFILE),quick)
# nbval's cell limit: 3x the longest cell measured cold, notebook 02's training cell (1,421 s on a
# 2-core AMD EPYC without AVX-512, training in float32; 2026-12-03), rounded up
NB_TIMEOUT ?= 4500

.PHONY: tutorial test unit nbval notebooks lab bench bench-gpu install clean-outputs lab-pack lab-unpack student

# Create the virtual environment and install the package with its dev tools.
# Reinstalls only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# Execute every notebook in order on the built-in data (quick profile by default);
# executed notebooks, figures and results.json go to outputs/$(PROFILE)/.
tutorial: $(VENV)/.installed
	$(PY) -m cityviz_helpers.tutorial --profile $(PROFILE)

# Unit tests, then every notebook under nbval (checked outputs must match).
test: $(VENV)/.installed
	MPLBACKEND=Agg CITYVIZ_QUIET=1 CITYVIZ_PROFILE=quick $(PY) -m pytest --durations=8 tests
	CITYVIZ_QUIET=1 CITYVIZ_HEADLESS=1 CITYVIZ_PROFILE=quick $(PY) -m pytest --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=$(NB_TIMEOUT) -p no:cacheprovider notebooks
	$(MAKE) --no-print-directory cached-test
	$(MAKE) --no-print-directory browser-test

# A fresh seat runs the series from the teacher's pack served on 127.0.0.1 (the cache nbval filled, packed);
# the figures: benchmarks/bench_pack_url.py. Plain `pytest tests` leaves it out.
.PHONY: cached-test
cached-test: $(VENV)/.installed
	CITYVIZ_QUIET=1 CITYVIZ_PROFILE=quick $(PY) -m pytest -p no:cacheprovider -s tests/cached

# JupyterLab in headless Chromium: the explorers of notebooks 03 and 04 redraw their figure when a
# control moves (screenshots in outputs/browser/). Needs Debian's chromium (apt-get install chromium)
# and the artifact cache that nbval fills; plain `pytest tests` leaves it out.
.PHONY: browser-test
browser-test: $(VENV)/.installed
	CITYVIZ_QUIET=1 CITYVIZ_PROFILE=quick $(PY) -m pytest -p no:cacheprovider -s tests/browser

unit: $(VENV)/.installed
	MPLBACKEND=Agg CITYVIZ_QUIET=1 $(PY) -m pytest tests

# Re-execute the committed notebooks in place (quick profile), so their outputs
# are those of a fresh run; commit the result.
notebooks: $(VENV)/.installed
	CITYVIZ_QUIET=1 CITYVIZ_HEADLESS=1 CITYVIZ_PROFILE=quick $(PY) -m cityviz_helpers.tutorial --profile quick --in-place

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_synthetic.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_training.py --batches 40 --side-by-side 2
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_gradcam.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_cam_study.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_clustering.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_segmentation.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_segmenter_step.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_pack_url.py

# On a machine with a CUDA GPU: the quick series cold and one full-profile epoch per architecture, timed.
bench-gpu: $(VENV)/.installed
	$(PY) benchmarks/bench_gpu.py

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks

# The teacher's kit (docs/teachers.md): pack a finished run's artifacts into
# outputs/lab-pack-<profile>-<dataset>-<hash>.tar.gz (and its .sha256); on each seat, verify and install it
# from the file or from its address on a web server (FILE=https://...)
# (same CITYVIZ_PROFILE and CITYVIZ_OVERRIDES as the teacher; nothing is overwritten).
lab-pack: $(VENV)/.installed
	CITYVIZ_PROFILE=$(PROFILE) $(PY) -m cityviz_helpers.labkit pack

lab-unpack: $(VENV)/.installed
	@test -n "$(FILE)" || { echo "Give the archive: make lab-unpack FILE=outputs/lab-pack-....tar.gz (or its https:// address)"; exit 2; }
	CITYVIZ_PROFILE=$(PROFILE) $(PY) -m cityviz_helpers.labkit unpack "$(FILE)"

# Student versions of the notebooks (solutions removed) in outputs/student/.
student: $(VENV)/.installed
	$(PY) -m cityviz_helpers.student
