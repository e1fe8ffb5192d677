"""Run every benchmark in this folder: ``python -m benchmarks [--quick] [--json-dir DIR] [-k NAME]``.

Each ``bench_*.py`` module's ``main(argv)`` is called in turn with ``--quick`` (when given) and
``--json DIR/<module>.json`` (when ``--json-dir`` is given). The exit status is non-zero when
any benchmark failed to run (missing a performance target is reported, not an error).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from pathlib import Path


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--json-dir", type=Path, help="write each benchmark's results to DIR/<name>.json")
    ap.add_argument("-k", dest="select", action="append", default=[],
                    help="run only benchmarks whose name contains this (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    names = [n for n in discover() if not args.select or any(s in n for s in args.select)]
    if args.list:
        print("\n".join(names))
        return 0
    if not names:
        print("no benchmark matched", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        sub: list[str] = []
        if args.quick:
            sub.append("--quick")
        if args.json_dir:
            args.json_dir.mkdir(parents=True, exist_ok=True)
            sub += ["--json", str(args.json_dir / f"{name}.json")]
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            rc = module.main(sub)
        except Exception:  # noqa: BLE001 - report and go on with the other benchmarks
            traceback.print_exc()
            rc = 1
        if rc:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
