# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench lint bundle clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,cluster]'
	# grad-cam declares opencv-python, which ships a second Qt; we use opencv-python-headless,
	# so grad-cam is installed without its declared dependencies (the rest are in pyproject).
	$(BIN)/pip install --no-deps 'grad-cam==1.5.7'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vidxai open --demo

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

# The desktop bundle (packaging/README.md): dist/vidxai/vidxai. BUNDLE_ARGS e.g. "--target gpu --tar --check".
bundle: $(STAMP)
	$(BIN)/python -c 'import PyInstaller' 2>/dev/null || $(BIN)/pip install -e '.[dev,bundle]'
	nice -n 10 $(BIN)/python packaging/build.py $(BUNDLE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check engine sessions vidxai_gui tests bench

clean:
	rm -rf $(VENV) build *.egg-info
