"""Report sections built from a manifest's stage counters.

Shared by ``rsdata inspect`` and the stage packages (and the benchmarks) without either importing
the other: :mod:`rsdata.inspect` does not import :mod:`rsdata.llm`, and :mod:`rsdata.llm` may
import from here.
"""
