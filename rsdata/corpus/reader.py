"""The one safe corpus reader: manifest-driven, verified while streaming, nothing extracted.

Shards may come from elsewhere (a download, a colleague, an annotation round). Every reader
in rsdata (``rsdata run`` with a corpus source, training, evaluation, scoring, filtering,
leakage guards, ``inspect``) streams shards through :func:`iter_shard`, which

* checks each member against the one member-name rule (:data:`rsdata.sample.MEMBER_PATTERN`;
  no path separators, no ``..``, no leading dot) and refuses links, devices and sparse members,
  and members larger than :func:`max_member_bytes`;
* hashes the shard while reading it and, at its end, compares size and sha256 with the
  manifest: a shard that does not match raises :class:`IntegrityError` (the bytes were changed
  after the manifest was written). ``verify=False`` skips that for users who know better.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from rsdata.corpus.manifest import ShardRecord, load_manifest, shard_records
from rsdata.errors import InputError, RsdataError
from rsdata.inputs import sha256_file
from rsdata.sample import IMAGE_FORMATS, MEMBER_PATTERN, Sample

CHUNK = 1 << 20
DEFAULT_MAX_MEMBER_BYTES = 256 * 2**20


class CorpusError(RsdataError):
    """A corpus cannot be read as asked (missing members, changed shards, bad json)."""


class UnsafeShardError(InputError):
    """A shard holds a member whose name or type a sample cannot have."""


class IntegrityError(InputError):
    """A shard's bytes differ from what its manifest records."""


def max_member_bytes() -> int:
    """Largest member read into memory (``RSDATA_MAX_MEMBER_BYTES``, default 256 MiB)."""
    try:
        return int(os.environ.get("RSDATA_MAX_MEMBER_BYTES", DEFAULT_MAX_MEMBER_BYTES))
    except ValueError:
        return DEFAULT_MAX_MEMBER_BYTES


def split_member(member: tarfile.TarInfo, shard: Path | str, limit: int | None = None) -> tuple[str, str]:
    """``abc_1_2.json`` -> (``abc_1_2``, ``json``); refuse anything that is not a plain sample file."""
    name = member.name
    if not member.isfile() or member.issparse():
        what = "a sparse file" if member.issparse() else "not a regular file (a link or device)"
        raise UnsafeShardError(f"{shard}: member {name!r} is {what}; refusing to read a shard "
                               "rsdata could not have written")
    key, dot, ext = name.partition(".")
    if not dot or not key or "/" in name or "\\" in name or ".." in name \
            or not MEMBER_PATTERN.match(ext.lower()) or not all(c.isalnum() or c in "_-" for c in key):
        raise UnsafeShardError(f"{shard}: unsafe member name {name!r} (path separators, '..', a "
                               "leading dot or characters a sample key cannot hold); refusing to "
                               "read this shard")
    limit = max_member_bytes() if limit is None else limit
    if member.size > limit:
        raise UnsafeShardError(f"{shard}: member {name!r} declares {member.size:,} bytes, more than "
                               f"the limit of {limit:,} (set RSDATA_MAX_MEMBER_BYTES to raise it)")
    return key, ext.lower()


class HashingReader:
    """A read-only file wrapper that hashes and counts every byte read through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.sha.update(data)
        self.nbytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def iter_shard(path: str | Path, expected: ShardRecord | None = None,
               extensions: Collection[str] | None = None, skip: Collection[str] = (),
               verify: bool = True, digest: Callable[[int, str], None] | None = None,
               list_unread: bool = False) -> Iterator[dict[str, Any]]:
    """Entries of one shard as ``{"__key__": key, ext: bytes, ...}``, streamed in tar order.

    ``extensions`` limits which members are read into memory, ``skip`` names members never
    read (e.g. large ``tif`` chips); the others are passed over unread (or listed with the value
    ``None`` when ``list_unread``). With ``expected`` (the manifest's record) and ``verify``,
    size and sha256 are checked when the shard ends; ``digest(nbytes, sha256)`` receives them.
    """
    path = Path(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"shard not found: {path}") from None
    limit = max_member_bytes()
    with raw:
        reader = HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                current: dict[str, Any] | None = None
                for member in tar:
                    key, ext = split_member(member, path, limit)
                    if current is None or current["__key__"] != key:
                        if current is not None:
                            yield current
                        current = {"__key__": key}
                    if (extensions is None or ext in extensions) and ext not in skip:
                        fh = tar.extractfile(member)
                        current[ext] = fh.read() if fh is not None else b""
                    elif list_unread:
                        current[ext] = None
                if current is not None:
                    yield current
        except (tarfile.TarError, EOFError) as exc:
            raise InputError(f"{path} is not a readable tar shard ({exc}); it is truncated or corrupt. "
                             "Check it against the manifest's sha256 (rsdata inspect does).") from None
        if (expected is not None and verify) or digest is not None:
            reader.drain()
            if digest is not None:
                digest(reader.nbytes, reader.sha.hexdigest())
            if expected is not None and verify:
                check_digest(path, expected, reader.nbytes, reader.sha.hexdigest())


def check_digest(path: Path, expected: ShardRecord, nbytes: int, sha256: str) -> None:
    if nbytes != expected.bytes or sha256 != expected.sha256:
        raise IntegrityError(
            f"shard {path} does not match its manifest (size {nbytes:,} vs {expected.bytes:,} "
            f"bytes, sha256 {sha256[:12]}... vs {expected.sha256[:12]}...): it was changed or "
            "corrupted after the corpus was written. Restore it or rebuild the corpus; "
            "--no-verify reads it anyway.")


def verify_shard(path: Path, expected: ShardRecord) -> None:
    """Hash one shard file and compare it with its manifest record (raises IntegrityError)."""
    if not path.is_file():
        raise IntegrityError(f"shard {path} listed in the manifest is missing")
    size = path.stat().st_size
    if size != expected.bytes:
        check_digest(path, expected, size, "?" * 64)
    check_digest(path, expected, size, sha256_file(path))


def parse_json(raw: bytes | str, what: str) -> Any:
    """``json.loads`` that turns bad or absurdly nested documents into a :class:`CorpusError`."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise CorpusError(f"{what} is JSON nested too deeply to be sample metadata") from None
    except ValueError as exc:
        raise CorpusError(f"{what} is not valid JSON ({exc})") from None


@dataclass
class Entry:
    """One WebDataset entry as stored: its key and the bytes of the members that were read."""

    key: str
    shard: str
    members: dict[str, bytes] = field(default_factory=dict)  # the members that were read

    def text(self) -> str:
        """The primary caption (``txt``); a clear error when the shard has none."""
        if "txt" not in self.members:
            raise CorpusError(f"sample {self.key} in {self.shard} has no txt member (the caption); "
                              "scoring needs captions: build the corpus with a captioning stage "
                              "(e.g. template_captions)")
        return self.members["txt"].decode("utf-8").strip()

    def meta(self) -> dict[str, Any]:
        raw = self.members.get("json")
        if raw is None:
            raise CorpusError(f"sample {self.key} in {self.shard} has no json member")
        meta = parse_json(raw, f"the json of sample {self.key} in {self.shard}")
        if not isinstance(meta, dict):
            raise CorpusError(f"sample {self.key} in {self.shard}: its json is not an object")
        return meta

    def image(self) -> bytes:
        for fmt in IMAGE_FORMATS:
            if fmt in self.members:
                return self.members[fmt]
        raise CorpusError(f"sample {self.key} in {self.shard} has no jpg or png member")

    def sample(self) -> Sample:
        """The entry as a :class:`Sample`: every member kept (extras included)."""
        self.image()
        meta = self.meta() if "json" in self.members else {}
        members = {k: v for k, v in self.members.items() if k != "json"}
        try:
            return Sample.from_wds({"__key__": self.key, **members, "json": meta})
        except ValueError as exc:
            raise CorpusError(f"sample {self.key} in {self.shard}: {exc}") from None


class Corpus:
    """An rsdata corpus (output of ``rsdata run`` or a derived version): manifest and shards."""

    def __init__(self, path: str | Path, verify: bool = True, allow_failed: bool = False) -> None:
        p = Path(path)
        if p.exists() and not p.is_dir() and p.name != "manifest.json":
            raise InputError(f"{p} is a file; give the corpus directory (the one holding manifest.json)")
        self.dir = p.parent if p.is_file() else p
        self.manifest_path = self.dir / "manifest.json"
        self.manifest = load_manifest(self.dir, allow_failed=allow_failed)
        self.verify = verify
        self._sha: str | None = None

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def nsamples(self) -> int:
        return int(self.manifest["nsamples"])

    def shards(self) -> list[ShardRecord]:
        return shard_records(self.dir, self.manifest)

    def manifest_sha256(self) -> str:
        if self._sha is None:
            self._sha = sha256_file(self.manifest_path)
        return self._sha

    def verify_all(self) -> None:
        """Hash every shard now (before anything is written from it)."""
        for rec in self.shards():
            verify_shard(rec.file, rec)

    def shard_entries(self, rec: ShardRecord, members: Collection[str] | None = None,
                      skip: Collection[str] = ()) -> Iterator[Entry]:
        """The entries of one shard, checked against its record (count, and bytes when verifying)."""
        if not rec.file.is_file():
            raise CorpusError(f"shard {rec.file} listed in {self.manifest_path} is missing")
        count = 0
        for raw in iter_shard(rec.file, rec, members, skip, verify=self.verify):
            count += 1
            key = raw.pop("__key__")
            yield Entry(key, str(rec.file), raw)
        if count != rec.nsamples:
            raise CorpusError(f"shard {rec.file} holds {count} samples but {self.manifest_path} says "
                              f"{rec.nsamples}: the corpus changed after its manifest was written")

    def entries(self, members: Collection[str] | None = None, skip: Collection[str] = ()) -> Iterator[Entry]:
        """Every entry in manifest order; ``members`` (extensions) limits what is read (default all)."""
        for rec in self.shards():
            yield from self.shard_entries(rec, members, skip)

    def samples(self) -> Iterator[Sample]:
        """Every sample, in manifest order, with all its members."""
        for entry in self.entries():
            yield entry.sample()


def iter_samples(out_dir: str | Path, verify: bool = True) -> Iterator[Sample]:
    """Every sample of a corpus, in manifest order."""
    return Corpus(out_dir, verify=verify).samples()
