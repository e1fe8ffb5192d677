"""Benchmarks of rsdata (not part of the package, not collected by pytest).

Every ``bench_*.py`` module in this folder exposes ``main(argv) -> int`` and can be run alone
(``python -m benchmarks.bench_spine``) or with all the others (``python -m benchmarks``).
See benchmarks/README.md.
"""
