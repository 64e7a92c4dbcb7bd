# Stockade: `make run` starts the API (and, as it grows, the sandbox cloud); `make test` runs
# the whole suite. Both install what is missing first (system packages need root).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT_PKGS := nftables libnftables1 iproute2 iputils-ping nmap postgresql wrk iperf3 dnsutils curl telnet netcat-openbsd procps openssh-server openssh-client graphviz
ARGS    ?=

.PHONY: run test deps system-deps lint format bench bench-deps clean

# pip is quiet (-q), so each step says what it is doing and about how long it takes
$(STAMP): pyproject.toml
	@echo "[1/3] creating the Python environment in $(VENV)/ (a few seconds)"
	@$(PY) -m venv $(VENV) || { echo "could not create $(VENV)/ with $(PY): install python3-venv (apt-get install python3-venv) or pass PY=/path/to/python3.11+"; exit 1; }
	@echo "[2/3] updating pip (a few seconds)"
	@$(BIN)/pip install -q --upgrade pip || { echo "updating pip failed (see above); is PyPI reachable?"; exit 1; }
	@echo "[3/3] installing Stockade and its Python packages (about a minute the first time)"
	@$(BIN)/pip install -q -e '.[dev,ansible]' || { echo "installing the Python packages failed (see above); is PyPI reachable? then run make again"; exit 1; }
	@touch $(STAMP)
	@echo "Python packages installed in $(VENV)/"

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
	@echo "installing the benchmarks' packages (moto; under a minute the first time)"
	@$(BIN)/pip install -q -e '.[dev,bench]'

clean:
	rm -rf $(VENV) .pytest_cache
