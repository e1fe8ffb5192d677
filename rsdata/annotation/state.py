"""Round records: what each round pushed, from which corpus version, to which project.

The state directory (``--state``, default ``annotation/state`` under the current directory, or
``$RSDATA_ANNOTATION_STATE``) is independent of any corpus version, so that

* a later round leaves out the samples earlier rounds had (keys stay the same across the
  versions a corpus source writes), whichever version they were pushed from;
* a pull refuses a corpus version other than the one the round was pushed from;
* the parent corpus is never written to (its directory may be read-only or shared).

Layout::

    STATE/rounds/<round id>.json   one record per round (atomic writes)
    STATE/annotator_salt           32 random bytes: annotator ids are HMAC-SHA256(salt, server|user id)
    STATE/.rsdata/annotate.lock    one push or pull of this state at a time

A record holds the round id, the template path and sha256, the config sha256, the kind, the
server URL (never the token), the project ids, the corpus (path, name, manifest sha256, recipe
hash), the sample keys, push progress and the pulls made (with the keys that got answers).
``annotation/state/`` is git-ignored: the salt is what keeps the hashed annotator ids from being
reversed by enumerating user ids, so share the state directory (``--state`` on a shared disk)
only with the people who run rounds, not in a public repository.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rsdata.atomic import atomic_write_bytes
from rsdata.errors import InputError

DEFAULT_STATE = Path("annotation") / "state"
STATE_ENV = "RSDATA_ANNOTATION_STATE"
RECORD_FORMAT = "rsdata-annotation-round/1"
SALT_NAME = "annotator_salt"
LOCK_NAME = "annotate.lock"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE)


class RoundStore:
    """The round records of one state directory."""

    def __init__(self, state_dir: str | Path | None = None) -> None:
        self.dir = Path(state_dir) if state_dir else default_state_dir()
        if self.dir.exists() and not self.dir.is_dir():
            raise InputError(f"annotation state {self.dir} is a file, not a directory: give another "
                             "--state")

    @property
    def rounds_dir(self) -> Path:
        return self.dir / "rounds"

    def path(self, round_id: str) -> Path:
        return self.rounds_dir / f"{round_id}.json"

    def load(self, round_id: str) -> dict[str, Any] | None:
        from rsdata.lock import read_json_state

        record = read_json_state(self.path(round_id))
        if record is not None and record.get("format") != RECORD_FORMAT:
            raise InputError(f"{self.path(round_id)} is not an rsdata round record (format "
                             f"{record.get('format')!r}); move it away")
        return record

    def save(self, record: dict[str, Any]) -> None:
        record["updated"] = now()
        self.rounds_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path(record["round"]),
                           json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))

    def records(self) -> list[dict[str, Any]]:
        out = []
        if self.rounds_dir.is_dir():
            for path in sorted(self.rounds_dir.glob("*.json")):
                record = self.load(path.stem)
                if record is not None:
                    out.append(record)
        return out

    def reviewed_keys(self, except_round: str | None = None) -> set[str]:
        """Sample keys other rounds of this state reviewed: of a pulled round, the keys that got
        answers (in any of its pulls); of a round not pulled yet, every key it pushed (its
        annotators may be working on them)."""
        keys: set[str] = set()
        for record in self.records():
            if record["round"] == except_round:
                continue
            pulls = record.get("pulls") or []
            if pulls:
                for p in pulls:
                    keys.update(p.get("reviewed_keys", []))
            else:
                keys.update(record.get("sample_keys", []))
        return keys

    def salt(self) -> bytes:
        """This state's annotator salt (created on first use, readable by the owner only)."""
        path = self.dir / SALT_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        if len(data) >= 16:
            return data
        self.dir.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return data

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One push or pull of this state at a time (``STATE/.rsdata/annotate.lock``)."""
        from rsdata.lock import command_line, output_lock

        with output_lock(self.dir, command_line(), name=LOCK_NAME):
            yield


def annotator_id(salt: bytes, server: str, user: Any) -> str:
    """A stable, non-reversible id of a Label Studio user (``a-`` + 16 hex digits)."""
    digest = hmac.new(salt, f"{server.rstrip('/')}|{user}".encode("utf-8"), hashlib.sha256).hexdigest()
    return "a-" + digest[:16]


def new_record(template: Any, corpus: Any, manifest_sha256: str, url: str,
               keys: list[str], strata: dict[str, Any]) -> dict[str, Any]:
    """The record of a round about to be pushed (no project yet)."""
    manifest = corpus.manifest
    return {
        "format": RECORD_FORMAT,
        "round": template.id,
        "kind": template.kind,
        "template": {"path": str(template.path), "sha256": hashlib.sha256(
            template.path.read_bytes()).hexdigest()},
        "config_sha256": template.config_sha256,
        "overlap": template.overlap,
        "server": url.rstrip("/"),
        "project": None,
        "media_project": None,
        "corpus": {"path": str(Path(corpus.dir).resolve()), "name": manifest["name"],
                   "manifest_sha256": manifest_sha256, "recipe_hash": manifest["recipe_hash"],
                   "nsamples": manifest["nsamples"]},
        "sample_keys": keys,
        "strata": strata,
        "push": {"status": "started", "started": now(), "tasks": 0},
        "pulls": [],
        "created": now(),
    }
