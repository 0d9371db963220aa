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
	@# musicnn's published weights (train/pretrained.py). --no-deps: its TensorFlow and old numpy pins
	@# are not needed, the project reads the checkpoints itself.
	$(BIN)/python -m pip install -q --no-deps "musicnn==0.1.0"
	touch $(STAMP)

# A short budget keeps the demo to minutes on 2 CPU cores; bench/bench_quality.py trains the full default.
DEMO_EPOCHS ?= 6
# The default corpus is 1,600 clips; CI runs the same chain on a few hundred (make demo DEMO_CLIPS=300).
DEMO_CLIPS ?= 1600
SUFFIX   := $(if $(filter 1600,$(DEMO_CLIPS)),,-$(DEMO_CLIPS))
DEMO_DIR := cache/demo$(SUFFIX)
FEATURES := cache/features$(SUFFIX).h5
RUNS     := cache/runs$(SUFFIX)

# A finished run is kept, a killed one resumed: `make demo` can be re-run at any point.
define train
	@if [ -f $(RUNS)/$(1)/metrics.json ]; then echo "$(RUNS)/$(1): done already"; \
	elif [ -f $(RUNS)/$(1)/last.pt ]; then $(BIN)/python train/run.py $(2) --features $(FEATURES) --out $(RUNS)/$(1) --resume; \
	else $(BIN)/python train/run.py $(2) --features $(FEATURES) --out $(RUNS)/$(1); fi
endef

demo: $(STAMP)
	$(BIN)/python data/demo.py --out $(DEMO_DIR) --clips $(DEMO_CLIPS)
	$(BIN)/python pipeline/extract.py --features mel,mfcc,chroma --data $(DEMO_DIR) --out $(FEATURES)
	$(call train,tagging-baseline,--model baseline --epochs $(DEMO_EPOCHS))
	$(call train,tagging-shortres,--epochs $(DEMO_EPOCHS))
	$(call train,metric-shortres,--task metric --init $(RUNS)/tagging-shortres --epochs $(DEMO_EPOCHS))
	$(BIN)/python eval/auc.py $(RUNS)/tagging-shortres/predictions.npy
	$(BIN)/python eval/recall.py $(RUNS)/metric-shortres/embeddings.npy
	$(BIN)/python train/report.py $(RUNS)
	@# Your own music: index the demo corpus with the metric run, then the clips nearest to one of them.
	$(BIN)/python train/library.py index $(DEMO_DIR)/mp3 --run $(RUNS)/metric-shortres --out cache/library$(SUFFIX).h5
	$(BIN)/python train/library.py similar $$(ls $(DEMO_DIR)/mp3/0/*.mp3 | head -1) --index cache/library$(SUFFIX).h5 --k 5
	@# A network trained on the real MTAT (musicnn's published weights) tags a demo clip.
	$(BIN)/python train/pretrained.py MTT_musicnn
	$(BIN)/python train/tag.py $$(ls $(DEMO_DIR)/mp3/0/*.mp3 | head -1) --run cache/pretrained/MTT_musicnn \
		--top-k 5 --taggram cache/pretrained/MTT_musicnn/taggram.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf cache/demo cache/demo-* cache/*.h5 cache/*.log cache/runs cache/runs-* cache/.library*
