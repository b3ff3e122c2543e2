# The two commands a new user runs: `make demo` and `make test`.
# Both create .venv if missing and install the project into it. An installed
# torch is kept (the venv sees the system site-packages); otherwise TORCH_SPEC
# is installed first, so no other package can pull a CUDA build of torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo ground-truth test bench bmi-samples bmi clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null \
	  && echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')" \
	  || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test]"
	@touch $(STAMP)

# The main job on the embedded default: fine-tune the bundled world model with the
# InformationMonitor on, analyse it, print the findings (demo.py says what each step does).
demo: $(STAMP)
	$(PY) demo.py

# The estimators against a closed form: I(X;Y) of a jointly Gaussian pair, exact denoiser.
ground-truth: $(STAMP)
	$(PY) analyze.py --config configs/analyze/gaussian.yaml

# One pytest worker per core (pytest-xdist); a test file stays on one worker, so its
# module fixtures are built once; files with a slow test go first (tests/conftest.py)
# and keep that order. PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# The bmi benchmark's samples, from bmi's own environment (it needs an old JAX that the
# project does not depend on; jaxlib 0.4.13 has wheels for Python 3.9-3.11 only).
BMI_PYTHON ?= python3.11
BMI_VENV ?= .venv-bmi
bmi-samples:
	@test -x $(BMI_VENV)/bin/python || $(BMI_PYTHON) -m venv $(BMI_VENV)
	$(BMI_VENV)/bin/python -m pip install -q benchmark-mi==0.1.3 jax==0.4.13 jaxlib==0.4.13 "scipy<1.12" chex==0.1.82 optax==0.1.7
	$(BMI_VENV)/bin/python benchmarks/bmi/export_samples.py --out benchmarks/bmi/samples

# All 40 tasks with the fixed recipe (configs/*/vector_mi.yaml); resumes task by task.
bmi: $(STAMP)
	@test -f benchmarks/bmi/samples/tasks.json || $(MAKE) bmi-samples
	$(PY) benchmarks/bmi/run_benchmark.py

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache
