"""``rsdata annotate push | status | pull``: crowdsourced annotation rounds on Label Studio.

    rsdata annotate push out/demo --round annotation/rounds/caption_verification.yaml
    rsdata annotate status
    rsdata annotate pull out/demo --round annotation/rounds/caption_verification.yaml --out out/demo-r1

The server's URL and API token come from ``--url`` / ``--token`` or ``LABEL_STUDIO_URL`` /
``LABEL_STUDIO_API_KEY``. Round records live in ``--state`` (default ``annotation/state``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rsdata.argtypes import positive_int as _positive_int


def _server(args: argparse.Namespace) -> Any:
    from rsdata.annotation.server import LabelStudioServer, credentials

    url, token = credentials(args.url, args.token)
    args.token = None  # the token lives in the server object only from here on
    return LabelStudioServer(url, token, timeout=args.timeout)


def cmd_push(args: argparse.Namespace) -> int:
    from rsdata.annotation.rounds import push

    server = _server(args)
    try:
        result = push(args.corpus, args.round, server.url, "", state_dir=args.state,
                      batch_size=args.batch_size, quiet=args.quiet, server=server)
    finally:
        server.close()
    print(result.summary(server.url))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rsdata.annotation.rounds import format_status, status

    server = _server(args)
    try:
        rows = status(server.url, "", state_dir=args.state, template_path=args.round, server=server)
    finally:
        server.close()
    print(json.dumps(rows, indent=1) if args.json else format_status(rows))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from rsdata.annotation.rounds import format_agreement, pull

    server = _server(args)
    try:
        result = pull(args.corpus, args.round, args.out, server.url, "", state_dir=args.state,
                      overwrite=args.overwrite, workers=args.workers, quiet=args.quiet, server=server)
    finally:
        server.close()
    print(result.run_summary)
    merge = next((s for s in result.manifest["stages"] if s["name"] == "human_merge"), None)
    if merge is not None:
        counters = merge.get("counters") or {}
        shown = {k: v for k, v in counters.items() if k.startswith(("resolution:", "invalid_answer:"))}
        print("review: " + (", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in shown.items()) or "nothing")
              + f"; human captions {counters.get('human_captions', 0)}")
    print(f"agreement: {format_agreement(result.answers['agreement'])}")
    print(f"answers: {result.answers_path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="Label Studio server (default: $LABEL_STUDIO_URL)")
    p.add_argument("--token", help="API token (default: $LABEL_STUDIO_API_KEY; prefer the variable: "
                                   "a command line is visible to other users of the machine)")
    p.add_argument("--state", help="round records directory (default: $RSDATA_ANNOTATION_STATE or "
                                   "annotation/state)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one request")


def register(sub: Any) -> None:
    """Add ``annotate`` (push, status, pull) to the ``rsdata`` command line."""
    ann = sub.add_parser("annotate", help="crowdsourced annotation rounds on a Label Studio server",
                         description="Push a sample of a corpus to Label Studio as a round, follow "
                                     "it, and pull the answers back as a new corpus version.")
    asub = ann.add_subparsers(dest="annotate_command", required=True)

    p = asub.add_parser("push", help="create or resume a round's project and import its tasks")
    p.add_argument("corpus", help="corpus directory (holds manifest.json)")
    p.add_argument("--round", required=True, help="round template, e.g. annotation/rounds/caption_verification.yaml")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="tasks per import request")
    p.add_argument("--quiet", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_push)

    s = asub.add_parser("status", help="tasks, answers, annotators and agreement of each round")
    s.add_argument("--round", help="only this round template (default: every round of --state)")
    s.add_argument("--json", action="store_true", help="print JSON")
    _common(s)
    s.set_defaults(func=cmd_status)

    q = asub.add_parser("pull", help="export the answers and merge them into a new corpus version")
    q.add_argument("corpus", help="the corpus the round was pushed from")
    q.add_argument("--round", required=True, help="round template")
    q.add_argument("--out", required=True, help="directory of the merged corpus")
    q.add_argument("--workers", type=_positive_int, default=1)
    q.add_argument("--overwrite", action="store_true",
                   help="replace an earlier merge in --out (e.g. after more answers came in)")
    q.add_argument("--quiet", action="store_true")
    _common(q)
    q.set_defaults(func=cmd_pull)

