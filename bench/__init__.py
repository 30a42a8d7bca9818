"""Benchmarks and checks that print the project's timing evidence; run as modules (`python -m bench.bench_train`)."""
