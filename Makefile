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
