# `make test` does all set-up on a fresh machine: a venv, the pinned CPU torch, the build tools, the
# package built against that torch (no build isolation), then the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
NVCC ?= nvcc
TORCH_INC = $(shell $(PY) -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
PYTEST_ARGS ?=

.PHONY: all test build deps cuda-check gpu-check-dry-run bench bench-quick demo wheel wheel-check quickstart-check lint \
	format clean

all: test

$(VENV)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q "$(TORCH_SPEC)" "scikit-build-core>=0.10" "cmake>=3.26" ninja "numpy>=1.24" \
		pytest hypothesis scipy scikit-learn ruff matplotlib tqdm
	touch $@

deps: $(VENV)/.deps

build: deps
	$(PIP) install --no-build-isolation --no-deps -q .

# Compile every CUDA source with nvcc -c against the torch headers (a syntax and template check on
# machines without a GPU). Skipped, with a note, where nvcc is missing.
cuda-check: deps
	@if command -v $(NVCC) >/dev/null 2>&1; then \
		for f in csrc/cuda/*.cu; do \
			echo "nvcc -c $$f"; \
			$(NVCC) -c -std=c++20 -O2 -arch=sm_90 -I$(TORCH_INC) -I$(TORCH_INC)/torch/csrc/api/include -Icsrc/include \
				-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE --expt-relaxed-constexpr -diag-suppress 3306 \
				-Xcompiler -Wno-c++20-extensions $$f -o /tmp/tangentlens-$$(basename $$f).o || exit 1; \
		done; \
	else echo "cuda-check: nvcc not found, skipped"; fi

# scripts/gpu_check.sh (the one-command check on an H100/H200) in its --dry-run mode: its tools and packages,
# its time caps against the 9-minute budget, the sanitizer's test selection and the bench's time-boxing.
GPU_CHECK_DRY_RUN = PYTHON=$(PY) scripts/gpu_check.sh build/gpu-check-dry-run --dry-run

test: build cuda-check
	$(PY) -m pytest tests -q $(PYTEST_ARGS)
	$(GPU_CHECK_DRY_RUN)

gpu-check-dry-run: build
	$(GPU_CHECK_DRY_RUN)

lint: deps
	$(VENV)/bin/ruff check python tests bench scripts
	$(VENV)/bin/ruff format --check python tests bench scripts

format: deps
	$(VENV)/bin/ruff format python tests bench scripts
	$(VENV)/bin/ruff check --fix python tests bench scripts

bench: build
	$(PY) -m bench

# The main job on the embedded default: PPL, spectra and metrics of the shipped dSprites VAEs (a few minutes
# on 2 cores); writes demo-report/report.md, report.json and PNG plots.
DEMO_OUT ?= demo-report
demo: build
	$(PY) -m tangentlens demo --out $(DEMO_OUT)

bench-quick: build
	$(PY) -m bench --quick

wheel: deps
	$(PIP) wheel --no-build-isolation --no-deps -w dist .

# The wheel installs into a fresh venv (with the pinned torch) and imports with its native ops.
wheel-check: wheel
	rm -rf /tmp/tangentlens-wheel-venv
	$(PYTHON) -m venv /tmp/tangentlens-wheel-venv
	/tmp/tangentlens-wheel-venv/bin/pip install -q "$(TORCH_SPEC)" dist/tangentlens-*.whl
	cd /tmp && /tmp/tangentlens-wheel-venv/bin/python -c "import tangentlens as t; \
		assert t.NATIVE_AVAILABLE, t.native_build_info(); print('wheel ok', t.__version__, t.native_build_info())"
	cd /tmp && /tmp/tangentlens-wheel-venv/bin/tangentlens info

# The README's quick start in the wheel's fresh venv, a local server standing in for the weights' download
# hosts (scripts/quickstart_check.sh): weights that arrive by themselves, no manual download.
quickstart-check: wheel-check
	bash scripts/quickstart_check.sh /tmp/tangentlens-wheel-venv

clean:
	rm -rf build dist *.egg-info
