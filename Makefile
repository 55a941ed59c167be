# The README's two commands: `make run` (set up, start the app on the embedded defaults) and
# `make test` (set up, check notebooks ⇄ package, build the docs, run every notebook test and every pytest test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup run demo test sync check-sync docs nbtest pytest browser-deps bench

setup: $(VENV)/.installed

# Torch first, pinned to a release with a working torchvision (CPU machines here have it on disk).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev,ray,runpod,cpu-fast]"
	touch $@

run: setup
	$(BIN)/python app.py

# The whole flow without the gated weights: a tiny random SAM 3 built locally (its masks are noise), presets with
# thresholds at 0 so it finds something, and a data dir of its own.
demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -c "from s3lib.testing import make_demo; make_demo('tiny-sam3', 'presets')"
	HF_HUB_OFFLINE=1 S3LIB_MODEL=tiny-sam3/model S3LIB_PRESETS_DIR=tiny-sam3/presets S3LIB_DATA_DIR=data-demo $(BIN)/python app.py

# Debian's chromium for the browser tests (never `playwright install`: it downloads a browser), and axe-core (npm) for
# the accessibility scan.
browser-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }
	@test -f .cache/axe-core/axe.min.js || { mkdir -p .cache/axe-core && cd .cache/axe-core && \
	  npm pack --silent axe-core@4 >/dev/null && tar xzf axe-core-*.tgz package/axe.min.js --strip-components=1 && rm axe-core-*.tgz; }

sync: setup
	$(BIN)/nbdev-clean && $(BIN)/nbdev-export

check-sync: setup
	VENV=$(VENV) scripts/check_nbdev_sync.sh

# The documentation site in _docs/, from the notebooks (nbs/index.qmd is the home page): nbdev's notebook
# processing, rendered to HTML by scripts/build_docs.py. Offline, no notebook executed (show_doc cells are read from
# the exported package), ~10 s. Not Quarto: its PyPI package downloads Quarto from GitHub at install time.
docs: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/build_docs.py

# Tests never reach the hub (they build a tiny SAM 3 locally); `make run` may, to download facebook/sam3.
nbtest: setup
	HF_HUB_OFFLINE=1 $(BIN)/nbdev-test --n-workers 2

pytest: setup browser-deps
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

test: check-sync docs nbtest pytest

bench: setup
	$(BIN)/python benchmarks/edit.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/segment.py --size small
	$(BIN)/python benchmarks/uploads.py
