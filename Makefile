# Stockade: `make run` starts the API (and, as it grows, the sandbox cloud); `make test` runs
# the whole suite. Both install what is missing first (system packages need root).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT_PKGS := nftables libnftables1 iproute2 iputils-ping nmap postgresql wrk iperf3 dnsutils curl telnet netcat-openbsd procps openssh-server openssh-client
ARGS    ?=

.PHONY: run test deps system-deps lint format bench bench-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

deps: system-deps $(STAMP)

system-deps:
	@bash scripts/system-deps.sh $(APT_PKGS)

# as root: the whole sandbox region (API + hosts + edge + internet); otherwise the API alone
run: deps
	@if [ "$$(id -u)" -eq 0 ]; then exec $(BIN)/stockade up $(ARGS); \
	else echo "not root: serving the API only (the sandbox needs root)"; exec $(BIN)/stockade serve $(ARGS); fi

test: deps
	$(BIN)/pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# every benchmark in one run (about 10 minutes; root for the namespace ones), then a summary
bench: bench-deps
	$(BIN)/python bench/run.py $(ARGS)

# the ~1-minute smoke run CI executes (the numbers are not checked)
.PHONY: bench-quick
bench-quick: bench-deps
	$(BIN)/python bench/run.py --quick $(ARGS)

bench-deps: deps
	$(BIN)/pip install -q -e '.[dev,bench]'

clean:
	rm -rf $(VENV) .pytest_cache
