# etfuse: every target sets itself up on a fresh machine (creates .venv, installs, then runs).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
# two workers: this machine has two cores
PYTEST_ARGS ?= -n 2

# Telemetry off: onnxruntime, MLflow and Prefect otherwise reach for hosts this machine cannot see.
export ORT_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

# The suite runs in two xdist workers on two cores: one intra-op thread each for torch (OpenMP).
# Measured: with torch's default two threads per worker, the demo test and the training test side by
# side spun on each other's cores and took over 20 minutes instead of about 4 each.
test test-fast test-slow: export OMP_NUM_THREADS := 1

.PHONY: help install demo lint test test-fast test-slow lock clean up down logs

help:
	@echo "make demo       set up .venv and run the demo on embedded defaults"
	@echo "make test       set up .venv and run the whole test suite (what CI runs)"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make lint       pyflakes-level checks (ruff); part of make test"
	@echo "make explorer   build the web explorer bundle (npm ci + build; needs node and npm)"
	@echo "make lock       re-resolve requirements/constraints.txt from pyproject.toml"
	@echo "make clean      remove .venv and runtime state under var/"
	@echo "make images     build the stack's images without Docker Hub (ETFUSE_BASE=registry: usual bases)"
	@echo "make up         production stack: docker compose up (needs a Docker engine, make images, .env; docs/deployment.md)"
	@echo "make down       stop the stack (named volumes, i.e. all data, stay)"
	@echo "make logs       follow the stack's logs"

install: $(STAMP)

# torch first, pinned: an unpinned dependency on torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e '.[cpu,dev]'
	touch $(STAMP)

demo: $(STAMP) explorer
	$(BIN)/etfuse demo

lint: $(STAMP)
	$(BIN)/ruff check etfuse training serving flows tests bench

test: $(STAMP) lint explorer
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) explorer
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) explorer
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install -q --upgrade pip
	.lockvenv/bin/python -m pip install -q torch==2.13.0
	.lockvenv/bin/python -m pip install -q -e '.[cpu,dev]'
	{ echo "# Exact versions resolved $$(date -u +%F) (Python 3.11, linux x86_64); used as pip constraints by the Makefile."; \
	  echo "# Regenerate with: make lock.  torch is installed separately (torch==2.13.0, CPU build)."; \
	  .lockvenv/bin/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > requirements/constraints.txt
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) var

# Production stack (docs/deployment.md): needs a Docker engine with compose v2 (or docker-compose 1.29) and .env.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.env:
	@echo "no .env: cp .env.example .env and set every secret in it (docs/deployment.md)" >&2; exit 2

# the images come from `make images` (a build inside compose would use neither the host network nor
# the local bases); compose builds only an image that is missing, with the bases named in .env
up: .env
	$(COMPOSE) up -d $(if $(findstring docker compose,$(COMPOSE)),--wait,)

down:
	$(COMPOSE) down

logs:
	$(COMPOSE) logs -f --tail=200

# --- web explorer (serving/explorer, docs/explorer.md) --------------------------------------------
# Leaflet and uPlot from the npm registry (package-lock.json), copied with our sources into
# serving/explorer/dist, which the API serves at / (no CDN at run time).  Needs node >= 18 and npm.
EXPLORER := serving/explorer
.PHONY: explorer
explorer: $(EXPLORER)/dist/build.json

$(EXPLORER)/dist/build.json: $(EXPLORER)/package.json $(EXPLORER)/package-lock.json $(EXPLORER)/build.mjs $(wildcard $(EXPLORER)/src/*)
	cd $(EXPLORER) && npm ci --no-audit --no-fund && npm run build

# ---- images (docs/deployment.md, "Building without a registry"): every image of docker-compose.yml
# with the classic builder on the host network, from debootstrap bases (ETFUSE_BASE=local) or the
# registry's (ETFUSE_BASE=registry); IMAGES picks some of: cpu postgres seaweedfs gpu.
ETFUSE_BASE ?= local
IMAGES ?= cpu postgres seaweedfs gpu
.PHONY: images
images:
	ETFUSE_BASE=$(ETFUSE_BASE) sh infra/docker/build-images.sh $(IMAGES)
