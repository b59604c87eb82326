# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned and installed before the package so that no CUDA build is pulled in.
TORCH  := torch==2.13.0

.PHONY: install install-test fonts browser tcmalloc demo test lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Korean text in attention heatmaps needs a CJK font; install it where we can (root + apt-get).
fonts:
	@fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq fonts-noto-cjk) >/dev/null 2>&1 \
	      || echo "warning: could not install fonts-noto-cjk; Korean glyphs may not render"; \
	  else echo "warning: no CJK font (install fonts-noto-cjk); Korean glyphs may not render"; fi; }

# The web-page test drives Debian's chromium (no browser download); it is skipped where none can be had.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "warning: no chromium; the browser test will be skipped"; fi; }

# Training runs ~14% faster under tcmalloc (seqattn re-executes train/bench with it when it is installed).
tcmalloc:
	@ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4) >/dev/null 2>&1 \
	      || echo "note: could not install libtcmalloc-minimal4; training uses glibc malloc"; \
	  else echo "note: libtcmalloc-minimal4 not installed; training uses glibc malloc"; fi; }

demo: install fonts tcmalloc
	$(BIN)/seqattn demo --out demo_out

test: install-test fonts browser tcmalloc
	$(BIN)/python -m pytest -q -rs

lint: install-test
	$(BIN)/ruff check seqattn seqattn_runtime tests benchmarks

bench: install tcmalloc
	$(BIN)/seqattn bench
	$(BIN)/python benchmarks/multi30k.py

# Rerun the walkthrough pages' commands (about 8 minutes) and rewrite their outputs and figures.
docs: install fonts tcmalloc
	$(BIN)/python benchmarks/walkthrough.py

clean:
	rm -rf $(VENV) demo_out
