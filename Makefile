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

.PHONY: install data demo test test-all bench clean

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

bench: $(STAMP) $(DATA)
	$(BIN)/routing-env bench --json

clean:
	rm -rf $(VENV) runs .cache .data
