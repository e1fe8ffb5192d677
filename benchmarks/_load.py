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


def proc_stats() -> dict[int, list[str]]:
    """``/proc/PID/stat`` fields after the command name, per live process (empty where /proc is
    missing). fields[0] is the state (field 3 of proc(5)), [1] ppid, [2] pgrp, [11:15] utime,
    stime, cutime, cstime in clock ticks."""
    out: dict[int, list[str]] = {}
    if not os.path.isdir("/proc"):
        return out
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                out[int(entry.name)] = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
    return out
