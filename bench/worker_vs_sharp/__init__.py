"""Benchmark: our Fly worker's conversion beside the seed's sharp conversion.

Run `python -m bench.worker_vs_sharp` (see docs/worker.md). Not part of `make test`.
"""
