"""How busy the machine is: benchmarks on a shared box record other processes' load beside
their figures, so a slow number can be told from a noisy one."""

from __future__ import annotations

import os


def busy_s() -> float:
    """Non-idle CPU seconds of the whole machine since boot (nan where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:9]]
    except OSError:
        return float("nan")
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")
