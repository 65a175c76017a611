# cityviz: the two commands a student needs are `make tutorial` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= $(or $(CITYVIZ_PROFILE),quick)
NB_TIMEOUT ?= 2400

.PHONY: tutorial test unit nbval notebooks lab bench install clean-outputs lab-pack lab-unpack student

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
	MPLBACKEND=Agg CITYVIZ_QUIET=1 CITYVIZ_PROFILE=quick $(PY) -m pytest tests
	CITYVIZ_QUIET=1 CITYVIZ_PROFILE=quick $(PY) -m pytest --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=$(NB_TIMEOUT) -p no:cacheprovider notebooks
	$(MAKE) --no-print-directory browser-test

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
	CITYVIZ_QUIET=1 CITYVIZ_PROFILE=quick $(PY) -m cityviz_helpers.tutorial --profile quick --in-place

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_synthetic.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_training.py --batches 40 --side-by-side 2
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_gradcam.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_cam_study.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_clustering.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_segmentation.py
	CITYVIZ_QUIET=1 $(PY) benchmarks/bench_segmenter_step.py

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks

# The teacher's kit (README, "For teachers"): pack a finished run's artifacts into
# outputs/lab-pack-<profile>-<dataset>-<hash>.tar.gz; on each seat, verify and install it
# (same CITYVIZ_PROFILE and CITYVIZ_OVERRIDES as the teacher; nothing is overwritten).
lab-pack: $(VENV)/.installed
	CITYVIZ_PROFILE=$(PROFILE) $(PY) -m cityviz_helpers.labkit pack

lab-unpack: $(VENV)/.installed
	@test -n "$(FILE)" || { echo "Give the archive: make lab-unpack FILE=outputs/lab-pack-....tar.gz"; exit 2; }
	CITYVIZ_PROFILE=$(PROFILE) $(PY) -m cityviz_helpers.labkit unpack "$(FILE)"

# Student versions of the notebooks (solutions removed) in outputs/student/.
student: $(VENV)/.installed
	$(PY) -m cityviz_helpers.student
