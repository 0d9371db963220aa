# Two entry points: `make demo` (set up, then run the whole pipeline on the demo corpus)
# and `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch first, pinned, so the package's range is already met and pip pulls no other build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python pipeline/extract.py --features mel,mfcc,chroma

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf cache/demo cache/*.h5 cache/*.log cache/runs
