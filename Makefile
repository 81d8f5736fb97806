# Every target creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ROUTING_ENV_CACHE ?= $(CURDIR)/.cache

# CIFAR-10 staged beside the checkout (../shared/data): unpacked once into .data/ for tests and demos.
SHARED_DATA := $(sort $(wildcard ../shared/data/cifar-10-batches-py.tar.xz.part-*))
DATA_DIR := $(CURDIR)/.data
CIFAR10 := $(DATA_DIR)/cifar-10-batches-py/test_batch
ifneq ($(SHARED_DATA),)
export ROUTING_ENV_DATA ?= $(DATA_DIR)
DATA := $(CIFAR10)
endif

.PHONY: install data demo test test-all test-oldest-gymnasium test-clients bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

$(CIFAR10): $(SHARED_DATA)
	mkdir -p $(DATA_DIR)
	cat $(SHARED_DATA) | tar -xJf - -C $(DATA_DIR)
	touch $@

data: $(DATA)

demo: $(STAMP)
	$(BIN)/routing-env demo --out runs/demo

test: $(STAMP) $(DATA)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(DATA)
	$(BIN)/python -m pytest -q -m ''

# The core on the oldest gymnasium a supported RLlib pins (1.2.2), in its own venv (not run by CI).
OLDEST_GYMNASIUM := 1.2.2
test-oldest-gymnasium: $(DATA)
	test -x .venv-gymnasium-$(OLDEST_GYMNASIUM)/bin/python || $(PYTHON) -m venv .venv-gymnasium-$(OLDEST_GYMNASIUM)
	grep -v '^gymnasium==' constraints.txt > .venv-gymnasium-$(OLDEST_GYMNASIUM)/constraints.txt
	.venv-gymnasium-$(OLDEST_GYMNASIUM)/bin/python -m pip install --quiet -c .venv-gymnasium-$(OLDEST_GYMNASIUM)/constraints.txt \
		gymnasium==$(OLDEST_GYMNASIUM) -e '.[test]'
	.venv-gymnasium-$(OLDEST_GYMNASIUM)/bin/python -m pytest -q tests/test_env.py tests/test_vector.py tests/test_interop.py \
		tests/test_correctness.py tests/test_agents.py

# The recipes for other RL libraries (issue 19), each library in its own venv beside the project and
# nothing else, so that none changes .venv (not run by CI). A client's venv takes constraints.txt less
# the pins it cannot share: ray[rllib] pins gymnasium 1.2.2, tianshou's virtualenv wants filelock<4.
CLIENTS := torchrl tianshou rllib
CLIENT_VENVS := .venv-clients
torchrl_PKGS := torchrl==0.14.1 tensordict==0.14.3
tianshou_PKGS := tianshou==2.0.1
rllib_EXTRAS := ,rllib
tianshou_UNPIN := filelock
rllib_UNPIN := gymnasium

$(CLIENT_VENVS)/%/.installed: pyproject.toml constraints.txt
	test -x $(@D)/bin/python || $(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	grep -v -E '^($(or $($*_UNPIN),NONE))==' constraints.txt > $(@D)/constraints.txt
	$(@D)/bin/python -m pip install --quiet -c $(@D)/constraints.txt -e '.[test$($*_EXTRAS)]' $($*_PKGS)
	touch $@

test-clients: $(foreach c,$(CLIENTS),$(CLIENT_VENVS)/$(c)/.installed)
	status=0; for c in $(CLIENTS); do \
		$(CLIENT_VENVS)/$$c/bin/python -m pytest -q -m clients tests/test_clients_$$c.py || status=1; \
	done; exit $$status

bench: $(STAMP) $(DATA)
	$(BIN)/routing-env bench --json

# Pyflakes, syntax errors and import order ([tool.ruff] in pyproject.toml), ruff in its own venv (not run by CI).
lint:
	test -x .venv-lint/bin/ruff || ($(PYTHON) -m venv .venv-lint && .venv-lint/bin/python -m pip install --quiet ruff==0.17.6)
	.venv-lint/bin/ruff check routing_env tests examples benchmarks training

clean:
	rm -rf $(VENV) .venv-gymnasium-* $(CLIENT_VENVS) .venv-lint runs .cache .data
