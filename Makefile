# Benchmarks (bench/): `make bench` runs them all at full size (~20 min on a quiet 2-core
# machine, PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 must be up) and writes
# BENCHMARKS.md; `make bench-quick` runs tiny sizes (the smoke test's configuration).
PYTHON ?= .venv/bin/python

.PHONY: bench bench-quick

bench:
	$(PYTHON) -m bench.run_all

bench-quick:
	BENCH_DATABASE_URL=$${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/bench_quick} \
		$(PYTHON) -m bench.run_all --quick

# --- Security and resilience, larger runs (owner: security; CI runs the small sizes) ---------
# `make fuzz`: schemathesis, 100 examples per operation and generation mode; `make load`: 32
# clients x 500 feedback through gunicorn on PostgreSQL; `make faults`: the fault-injection tests.
# PostgreSQL at 127.0.0.1:5432 is used by load/faults (database security_load -> test_...).
SECURITY_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/security_load

.PHONY: fuzz load faults

fuzz:
	SYNAPSEX_EMBEDDED=1 FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-100} \
		$(PYTHON) -m pytest tests/security/test_schema_fuzz.py -p no:cacheprovider -q

load:
	SYNAPSEX_EMBEDDED=1 DATABASE_URL=$${DATABASE_URL:-$(SECURITY_DATABASE_URL)} \
		LOAD_CLIENTS=$${LOAD_CLIENTS:-32} LOAD_REQUESTS=$${LOAD_REQUESTS:-500} \
		$(PYTHON) -m pytest tests/resilience/test_load_without_loss.py -p no:cacheprovider -q -s

faults:
	SYNAPSEX_EMBEDDED=1 DATABASE_URL=$${DATABASE_URL:-$(SECURITY_DATABASE_URL)} \
		$(PYTHON) -m pytest tests/resilience/test_faults.py -p no:cacheprovider -q -s
