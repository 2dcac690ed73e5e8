"""Benchmarks (not tests): run with ``python -m tests.benchmarks`` (see ``__main__``)."""
