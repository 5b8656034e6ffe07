# gtp5g-operator — developer entry points.  `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
OUT    ?= out
REPO   ?= $(OUT)/repo
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' gtp5g_operator/__init__.py)

.PHONY: help venv demo test test-fast lint bench deb repo clean example-config vm-proof

help:
	@echo "make demo       run the daemon on an embedded default (recorded trace, local API);"
	@echo "                FLAVOR=v0|decision-maker|manager picks the Gthulhu server (default v0)"
	@echo "make test       run every test (unit, integration, faults, real kernel, packaged service,"
	@echo "                library and Python versions)"
	@echo "make test-fast  unit, property and integration tests only (and tests/vm's pure parts)"
	@echo "make lint       ruff and mypy"
	@echo "make bench      performance benchmark (writes bench/results/)"
	@echo "make deb        build the Debian package into $(OUT)/ (for the Debian release it runs on)"
	@echo "make repo       add it to a signed flat apt repository, $(REPO)/ (REPO_KEY: the gpg"
	@echo "                key to sign with; see packaging/make-repo)"
	@echo "make example-config  regenerate packaging/config.toml from the schema"
	@echo "make vm-proof   operator -> Decision Maker -> Gthulhu's scheduler in sched_ext QEMU guests,"
	@echo "                and the boost's effect (root; cache /var/cache/gtp5g-operator-tests/vm;"
	@echo "                VM_PROOF_ARGS=\"--reps 5\" passes options, see python3 -m bench.vm -h)"

$(VENV)/.done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

venv: $(VENV)/.done

demo: venv
	$(PY) -m testbed.demo $(if $(FLAVOR),--flavor $(FLAVOR))

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not system and not kernel and not faults and not compat and not contract"

lint: venv
	$(VENV)/bin/ruff check gtp5g_operator testbed tests bench
	$(VENV)/bin/mypy

bench: venv
	$(PY) -m bench.run

deb:
	packaging/build-deb $(OUT)

repo: deb
	packaging/make-repo $(REPO) $(OUT)/gtp5g-operator_$(VERSION)_all.deb

# packaging/config.toml is generated from the schema (gtp5g_operator/config/schema.py);
# a unit test fails while it differs
example-config: venv
	$(PY) -c 'from gtp5g_operator.service.vocabulary import example_config as e; print(e(), end="")' > packaging/config.toml

vm-proof:
	$(PYTHON) -m bench.vm $(VM_PROOF_ARGS)

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
