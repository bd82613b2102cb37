# Two entry points for a fresh machine: `make demo` and `make test`. Both create/refresh .venv,
# install the CPU torch wheel first (so the range in pyproject is already satisfied and pip never
# pulls a multi-GB CUDA build), then the project.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# pip would compile every file it installs (torch's and sympy's thousands: 12 of the 16 s torch takes to install on
# 2 cores); instead the venv compiles, once, what a run imports (a module imported later compiles on first use)
WARM   := import pvnas.cli, torch._dynamo, torch.distributed.run, matplotlib.pyplot

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-compile -e ".[dev]"
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -c "$(WARM)"
	touch $(STAMP)

# (bytecode cached even where the environment says not to: the suite starts ~60 Python processes, and every worker
# collects ~50 test files, ~1 s less each with pytest's cached rewrites)
test: venv
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

demo: venv
	rm -rf runs/demo
	$(BIN)/pvnas demo --out runs/demo

bench: venv
	$(BIN)/python benchmarks/bench_supernet.py
	$(BIN)/python benchmarks/bench_loader.py

clean:
	rm -rf $(VENV) runs .pytest_cache
