"""Load scenarios and micro-benchmarks for Uchat; run them with `python -m bench`.

Never part of the test suite (except `tests/bench/test_bench_smoke.py`, which runs every
scenario tiny so the bench cannot rot). See bench/README.md.
"""
