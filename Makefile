# One command to set up and reproduce, one to test. See README.md.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= params/default.yaml
export NLTK_DATA ?= $(CURDIR)/.nltk_data

RUN    ?= outputs/default
.PHONY: setup reproduce smoke test sync lab site check-site rehearse rehearse-ci rehearse-full gpu-check costs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@# WordNet for the NLTK cross-check test: Debian's wordnet-base + wordnet-sense-index, when present.
	-@bash scripts/setup_wordnet.sh $(NLTK_DATA) >/dev/null 2>&1 || echo "note: WordNet (Debian wordnet-base, wordnet-sense-index) not installed; the NLTK cross-check test will skip"
	touch $@

reproduce: setup            ## render every notebook with $(PARAMS) into outputs/<run>/
	$(PY) -m iqalib run $(PARAMS)

smoke: setup
	$(PY) -m iqalib run params/smoke.yaml

test: setup                 ## the whole test suite (includes rendering every notebook at smoke scale)
	$(PY) -m pytest -q

site: setup                 ## rebuild $(RUN)/site/ (the results site) from the run's executed notebooks
	$(PY) -m iqalib site $(RUN)

check-site: setup           ## open every page of $(RUN)/site/ in headless Chromium: missing resources, console errors, tables as text, figures
	$(PY) scripts/check_site.py $(RUN)/site

sync: setup                 ## regenerate each notebook's .ipynb twin from its .py (the reviewed source)
	$(VENV)/bin/jupytext --sync notebooks/*.py

lab: setup                  ## JupyterLab on notebooks/ (as root, e.g. in a container, with --allow-root)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

rehearse: setup             ## params/paper.yaml end to end on a miniature of the real data (random weights), + cost sheet
	$(PY) scripts/rehearse_paper.py --size ci --scratch $(or $(SCRATCH),/tmp/iqalib-rehearsal) --fresh

rehearse-ci: setup          ## what CI runs: the rehearsal of notebooks 00-04 (05 adds ~6 min on 2 cores), no cost sheet
	$(PY) scripts/rehearse_paper.py --size ci --scratch $(or $(SCRATCH),/tmp/iqalib-rehearsal) --fresh --no-costs --only 00 01 02 03 04

rehearse-full: setup        ## the same at a larger miniature (a few dozen photos)
	$(PY) scripts/rehearse_paper.py --size full --scratch $(or $(SCRATCH),/tmp/iqalib-rehearsal-full) --fresh

gpu-check: setup            ## on a GPU machine, first: the rehearsal on CUDA in fp32 and amp, timings, fp32-vs-amp tables, GPU cost sheet
	$(PY) scripts/gpu_check.py

costs: setup                ## the paper-scale cost sheet alone (unit costs measured on this machine)
	$(PY) scripts/paper_costs.py
