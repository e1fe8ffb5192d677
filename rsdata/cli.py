"""The ``rsdata`` command line: ``rsdata run RECIPE``, ``rsdata inspect DIR``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from rsdata import __version__
from rsdata.argtypes import positive_int as _positive_int
from rsdata.errors import RsdataError, UsageError


def cmd_run(args: argparse.Namespace) -> int:
    args.workers_given = args.workers is not None
    if args.workers is None:
        args.workers = 1
    from rsdata.executors.common import summary
    from rsdata.executors.local import run_local
    from rsdata.plan import build_plan
    from rsdata.recipe import load_recipe

    from rsdata.lock import command_line, output_lock

    recipe = load_recipe(args.recipe)
    out_dir = Path(args.out) if args.out else recipe.output_dir()
    ray_workers = args.workers if args.workers_given else None
    # one run per output directory, held from before the plan claims it until the manifest is written
    with output_lock(out_dir, command_line()) as lock:
        start = None
        if args.executor == "ray":
            from rsdata.executors.ray_executor import RayStart, run_ray

            # the cluster and the actors come up while the driver plans
            start = RayStart(recipe, workers=ray_workers, address=args.address)
        try:
            plan = build_plan(recipe, out_dir, overwrite=args.overwrite)
            lock.check()  # --overwrite may have cleared OUT/.rsdata, lock file included
            if not args.quiet:
                print(f"rsdata run {recipe.name}: {len(plan.partitions)} partitions, {plan.n_tiles} "
                      f"tiles -> {plan.out_dir} (recipe {plan.recipe_hash[:12]})", file=sys.stderr)
            if start is not None:
                result = run_ray(plan, workers=ray_workers, address=args.address,
                                 progress=not args.quiet, start=start)
            else:
                result = run_local(plan, workers=args.workers, progress=not args.quiet)
        finally:
            if start is not None:
                start.close()  # planning failed: stop the actors it started
    print(summary(result))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from rsdata.inspect import run_inspect

    report, summary = run_inspect(Path(args.dir), samples=args.samples,
                                  out=Path(args.out) if args.out else None,
                                  overlay=getattr(args, "overlay", False))
    print(report)
    if not summary["integrity"]["ok"]:
        print("rsdata: inspect: the corpus does not match its manifest (see MISMATCH above)",
              file=sys.stderr)
        return 1
    if summary.get("status") == "failed":
        print("rsdata: inspect: this corpus is the output of a failed run", file=sys.stderr)
        return 1
    return 0


# Modules that add more subcommands: each has ``register(subparsers) -> None`` that adds its
# parsers and sets ``func`` (called with the parsed args, returns an exit code). Their heavy
# imports happen inside ``func``, so ``rsdata --help`` stays fast.
EXTRA_COMMANDS: list[str] = [
    "rsdata.commands.score_filter",
    "rsdata.commands.train_eval",
    "rsdata.commands.annotate",
    "rsdata.commands.export",
    "rsdata.commands.synth",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsdata", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rsdata {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="build a corpus from a recipe (pipelines/*.yaml)")
    run.add_argument("recipe", help="recipe YAML, e.g. pipelines/demo.yaml")
    run.add_argument("--out", help="output directory (default: the recipe's output.dir, else out/NAME)")
    run.add_argument("--workers", type=_positive_int, default=None,
                     help="worker processes (local: default 1; ray: default one per cluster CPU)")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="where partitions run: local processes (default) or a Ray cluster")
    run.add_argument("--address", default=None,
                     help="Ray cluster to join (auto, ray://host:port); default: start a local one")
    run.add_argument("--overwrite", action="store_true",
                     help="delete an existing output of a different recipe instead of refusing")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    insp = sub.add_parser("inspect", help="summarise a corpus and draw a contact sheet")
    insp.add_argument("dir", help="output directory of rsdata run (holds manifest.json)")
    insp.add_argument("--samples", type=_positive_int, default=12, help="samples on the contact sheet")
    insp.add_argument("--out", help="where to write the PNGs (default DIR/inspect)")
    insp.add_argument("--overlay", action="store_true",
                      help="also draw contact_sheet_overlay.png: each sheet tile beside the same "
                           "tile with its OSM geometries (by class colour) and the 3x3 grid, above "
                           "its captions, to see where map and picture disagree")
    insp.set_defaults(func=cmd_inspect)

    for module in EXTRA_COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, paths of the wrong kind: an ``--out`` (of any command) that is a
    file, and ``rsdata inspect FILE``."""
    from rsdata.lock import check_output_dir

    if getattr(args, "out", None):
        check_output_dir(Path(args.out), "--out")
    if args.command == "inspect":
        target = Path(args.dir)
        if target.exists() and not target.is_dir():
            hint = (f" (this is a manifest: run rsdata inspect {target.parent})"
                    if target.name == "manifest.json" else "")
            raise UsageError(f"rsdata inspect {target}: it is a file, not a corpus directory{hint}. "
                             "Give the output directory of rsdata run, the folder that holds "
                             "manifest.json and shards/.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_paths(args)
        return int(args.func(args))
    except RsdataError as exc:
        print(f"rsdata: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from rsdata.atomic import NO_SPACE

        if exc.errno not in NO_SPACE:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"rsdata: error: the disk is full{where} ({exc.strerror}); nothing half-written is "
              "kept where rsdata writes atomically. Free some space and run the same command again.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ("; finished partitions are kept, run the same command to resume"
                if args.command == "run" else "")
        print(f"rsdata: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
