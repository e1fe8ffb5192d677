"""Read an existing corpus entry by entry, and write a derived corpus that points at its parent.

``rsdata score`` and ``rsdata filter`` never modify a corpus: they write a new version into
another directory, through :class:`rsdata.writer.ShardWriter` (atomic shards), and write its
``manifest.json`` last. The manifest keeps the parent's recipe, sources and stage statistics,
appends the new step's statistics (drops by reason), and names the parent's manifest in
``parent`` (relative to the new directory) with its sha256 under ``derivation``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsdata import __version__, schemas
from rsdata.errors import OutputConflictError, RsdataError
from rsdata.inputs import sha256_file
from rsdata.manifest import load_manifest, write_manifest
from rsdata.recipe import parse_bytes
from rsdata.sample import IMAGE_FORMATS, Sample
from rsdata.writer import ShardWriter

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_MAX_BYTES = "256MB"
# what a derived corpus directory holds besides its shards (removed by --overwrite)
OWN_FILES = ("manifest.json", "subset.json", "leakage_report.json")


class CorpusError(RsdataError):
    """A corpus cannot be read as asked (missing members, changed shards)."""


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
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise CorpusError(f"sample {self.key} in {self.shard} has invalid json ({exc})") from None
        if not isinstance(meta, dict):
            raise CorpusError(f"sample {self.key} in {self.shard}: its json is not an object")
        return meta

    def image(self) -> bytes:
        for fmt in IMAGE_FORMATS:
            if fmt in self.members:
                return self.members[fmt]
        raise CorpusError(f"sample {self.key} in {self.shard} has no jpg or png member")

    def sample(self) -> Sample:
        """The entry as a :class:`Sample` (for rewriting through the shard writer)."""
        self.image()
        try:
            return Sample.from_wds({"__key__": self.key, **self.members})
        except ValueError as exc:
            raise CorpusError(f"sample {self.key} in {self.shard}: {exc}") from None


class Corpus:
    """An output directory of ``rsdata run`` (or a derived corpus): its manifest and shards."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        self.dir = p.parent if p.is_file() else p
        self.manifest = load_manifest(self.dir)
        self.manifest_path = self.dir / "manifest.json"

    @property
    def nsamples(self) -> int:
        return int(self.manifest["nsamples"])

    def manifest_sha256(self) -> str:
        return sha256_file(self.manifest_path)

    def entries(self, members: Collection[str] | None = None) -> Iterator[Entry]:
        """Every entry in manifest order; ``members`` (extensions) limits what is read (default all).

        A shard that is missing, unreadable, or holds another number of samples than the
        manifest says is an error: the corpus changed after its manifest was written.
        """
        for shard in self.manifest["shards"]:
            path = self.dir / shard["path"]
            if not path.is_file():
                raise CorpusError(f"shard {path} listed in {self.manifest_path} is missing")
            count = 0
            for entry in read_entries(path, members):  # errors name the shard (InputError)
                count += 1
                yield entry
            if count != shard["nsamples"]:
                raise CorpusError(f"shard {path} holds {count} samples but {self.manifest_path} says "
                                  f"{shard['nsamples']}: the corpus changed after its manifest was written")


def read_entries(path: Path, members: Collection[str] | None = None) -> Iterator[Entry]:
    """Stream one tar shard (through :mod:`rsdata.shards`, which refuses unsafe member names)."""
    from rsdata.shards import iter_raw

    for raw in iter_raw(path, members):
        key = raw.pop("__key__")
        yield Entry(key, str(path), raw)


def claim_output(out_dir: Path, parent_dir: Path, overwrite: bool) -> None:
    """Make sure ``out_dir`` can take a new corpus: not the parent, not someone else's data."""
    if out_dir.resolve() == parent_dir.resolve():
        raise OutputConflictError(f"--out {out_dir} is the input corpus itself; rsdata never rewrites a "
                                  "corpus in place: choose a new directory for the new version")
    if parent_dir.resolve() in out_dir.resolve().parents:
        raise OutputConflictError(f"--out {out_dir} lies inside the input corpus {parent_dir}; "
                                  "choose a directory outside it")
    if not out_dir.exists():
        return
    taken = [n for n in OWN_FILES + ("shards",) if (out_dir / n).exists()]
    if taken and not overwrite:
        raise OutputConflictError(f"{out_dir} already holds a corpus ({', '.join(taken)}); choose "
                                  "another --out or pass --overwrite to replace it")
    for name in taken:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()


def shard_limits(parent: dict[str, Any], max_samples: int | None, max_bytes: int | str | None) -> tuple[int, int]:
    """Shard size limits: given ones, else the parent recipe's output settings."""
    out = (parent.get("recipe") or {}).get("output") or {}
    samples = max_samples or int(out.get("max_samples_per_shard", DEFAULT_MAX_SAMPLES))
    nbytes = parse_bytes(max_bytes or out.get("max_bytes_per_shard", DEFAULT_MAX_BYTES))
    return samples, nbytes


def derived_name(parent_name: str, suffix: str) -> str:
    return parent_name if parent_name.endswith(f"-{suffix}") else f"{parent_name}-{suffix}"


class DerivedCorpusWriter:
    """Writes the shards of a new corpus version; :meth:`finish` writes its manifest last."""

    def __init__(self, parent: Corpus, out_dir: str | Path, name: str, overwrite: bool = False,
                 max_samples: int | None = None, max_bytes: int | str | None = None) -> None:
        self.parent = parent
        self.out_dir = Path(out_dir)
        self.name = name
        claim_output(self.out_dir, parent.dir, overwrite)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        limit_samples, limit_bytes = shard_limits(parent.manifest, max_samples, max_bytes)
        prefix = "".join(c if c.isalnum() or c in "_-" else "-" for c in name) or "corpus"
        self.writer = ShardWriter(self.out_dir, prefix, limit_samples, limit_bytes)

    def write(self, sample: Sample) -> None:
        self.writer.write(sample)

    def abort(self) -> None:
        """Remove everything written so far (no manifest was written, so nothing refers to it)."""
        self.writer.abort()
        for shard in self.writer.shards:
            (self.out_dir / shard["path"]).unlink(missing_ok=True)
        self.writer.shards.clear()

    def finish(self, stages: list[dict[str, Any]], derivation: dict[str, Any],
               sources: list[dict[str, Any]] | None = None, seconds: float | None = None) -> dict[str, Any]:
        """Close the shards and write ``manifest.json``; returns the manifest."""
        shards = self.writer.close()
        parent = self.parent.manifest
        parent_sha = self.parent.manifest_sha256()
        derivation = {**derivation, "parent_manifest_sha256": parent_sha,
                      "parent_recipe_hash": parent["recipe_hash"]}
        ident = json.dumps({"parent": parent_sha, "derivation": derivation}, sort_keys=True, default=str)
        manifest: dict[str, Any] = {
            "format": parent["format"],
            "name": self.name,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rsdata_version": __version__,
            "recipe": parent["recipe"],
            "recipe_path": parent.get("recipe_path"),
            "recipe_hash": hashlib.sha256(ident.encode()).hexdigest(),
            "parent": os.path.relpath(self.parent.manifest_path.resolve(), self.out_dir.resolve()),
            "nsamples": sum(s["nsamples"] for s in shards),
            "shards": shards,
            "stages": list(parent.get("stages", [])) + stages,
            "sources": list(parent.get("sources", [])) + list(sources or []),
            "derivation": derivation,
        }
        if "osm" in parent:
            manifest["osm"] = parent["osm"]
        if seconds is not None:
            manifest["timing"] = {"seconds": round(seconds, 3)}
        schemas.validate("manifest", manifest, f"the manifest of {self.out_dir}")
        write_manifest(self.out_dir, manifest)
        return manifest

