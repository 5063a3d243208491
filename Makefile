# EnclaveSQL: every target creates .venv and installs the project on first use.
#   make demo    the guided tour on a fresh database
#   make test    native sanitizer tests, then the Python suite (under 10 minutes on 2 cores)
#   make bench   the benchmark suite (never part of make test); SF=1 for the full run
#   make fuzz    longer fuzzing runs than the bounded ones in make test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTENSION := enclave/enclavesql_udfs.duckdb_extension
NATIVE_INPUTS := $(wildcard native/include/*.h native/src/*.c native/src/*.h) \
                 enclave/build_enclave.py setup.py pyproject.toml
SYSTEM_PACKAGES := softhsm2 tmux valgrind
SF ?= 0.1
PYTEST_ARGS ?=

.PHONY: demo test bench fuzz native-test lint system-deps install clean

install: $(STAMP) $(EXTENSION)

$(STAMP): $(NATIVE_INPUTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $@

# The enclave predicates as a native DuckDB extension (falls back to Python UDFs when absent).
# The first build fetches the installed DuckDB release's C API headers from PyPI.
$(EXTENSION): $(STAMP) native/duckdb_extension/enclavesql_udfs.c native/include/enclave.h \
              enclave/build_duckdb_extension.py
	$(PY) -m enclave.build_duckdb_extension

# Debian packages the tests need. As root (CI) they are installed; elsewhere the command is printed
# and the tests that need them skip with a reason.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "Debian packages missing:$$missing. Install them with: sudo apt-get install -y$$missing"; \
	  fi; \
	fi

# The C tests under ASan and UBSan with a bounded fuzz run, then under valgrind when installed.
native-test:
	$(MAKE) -C native test
	$(MAKE) -C native valgrind

# The house tooling: ruff on everything, mypy strict on the two packages.
lint: $(STAMP)
	$(PY) -m ruff check engine enclave bench tests sql_examples
	$(PY) -m mypy engine enclave

test: system-deps $(STAMP) $(EXTENSION) native-test lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP) $(EXTENSION)
	$(PY) -m sql_examples

# The bench extra (matplotlib, tpchgen-cli, py-spy) has its own stamp so make test stays lean.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,dev,bench]'
	@touch $@

bench: $(BENCH_STAMP) $(EXTENSION)
	$(PY) -m bench --sf $(SF)

fuzz: $(STAMP)
	$(MAKE) -C native fuzz
	$(PY) -m tests.fuzz --seconds 300

clean:
	rm -rf $(VENV) build *.egg-info enclave/_native*.so enclave/_native.c native/build \
	       $(EXTENSION) enclave/enclavesql_udfs.version
