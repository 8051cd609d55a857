# energyflow: `make demo` and `make test` each set everything up from a fresh clone.
# TORCH_SPEC picks the torch to install (default: the CPU build on this machine's disk);
# point it at another, e.g. `make test TORCH_SPEC="torch==2.11.0"`.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.energyflow-installed

.PHONY: setup demo test bench study clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH_SPEC)" ninja
	$(PY) -m pip install -q --no-build-isolation -e ".[test,triton]"
	$(PY) -c "import energyflow; print(energyflow.backends())"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo_out
	$(PY) -m energyflow train --data 8gaussians --time-budget 50 --out demo_out

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q geomloss pykeops  # benchmark-only baselines (KeOps runs on the CPU)
	cd benchmarks && ../$(PY) bench_energy.py && ../$(PY) bench_masked.py

study: $(STAMP)
	$(PY) -m pip install -q zuko  # benchmark-only dependency (the MAF baseline)
	cd benchmarks && ../$(PY) study_likelihood_free.py --part ablation --budget 20 \
		&& ../$(PY) study_likelihood_free.py --part combine \
		&& ../$(PY) study_likelihood_free.py --part compare --budget 40 --toy-budget 10 \
		&& ../$(PY) study_likelihood_free.py --part cli --cli-steps 2000 \
		&& ../$(PY) study_posterior.py --part compare --budget 20

clean:
	rm -rf $(VENV) build *.egg-info energyflow/_C*.so demo_out
