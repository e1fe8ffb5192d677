"""Samples as training and evaluation read them: shards listed in manifests, raw entries, splits.

Shared by :mod:`rsdata.train` and :mod:`rsdata.evaluate` (neither imports the other).
Lengths are never guessed: every shard's ``nsamples`` comes from its corpus's
``manifest.json``, and a shard that holds another number of samples is an error (the corpus
changed after its manifest was written). Reading goes through :func:`rsdata.corpus.reader.iter_shard`.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from rsdata.errors import InputError, RsdataError
from rsdata.corpus.manifest import ShardRecord, load_manifest, shard_records
from rsdata.corpus.reader import iter_shard

IMAGE_EXTS = ("jpg", "jpeg", "png")
SKIP_EXTS = ("geotiff", "tif", "tiff")  # full-band chips: large and not used for training


class SampleDataError(RsdataError):
    """Shards cannot be used for training or evaluation (missing members, wrong counts)."""


@dataclass(frozen=True)
class ShardInfo:
    """One shard: absolute path, the sample count, size and sha256 its manifest records."""

    path: str
    nsamples: int
    bytes: int = 0
    sha256: str = ""

    def record(self) -> ShardRecord | None:
        if not self.sha256:
            return None
        return ShardRecord(self.path, Path(self.path), self.nsamples, self.bytes, self.sha256)


def list_shards(corpora: Iterable[str | Path]) -> list[ShardInfo]:
    """Every shard of the given output directories (or manifest files), in manifest order."""
    shards: list[ShardInfo] = []
    for corpus in corpora:
        path = Path(corpus)
        manifest = load_manifest(path)
        base = path.parent if path.is_file() else path
        for rec in shard_records(base, manifest):
            if not rec.file.is_file():
                raise InputError(f"shard {rec.file} listed in {base / 'manifest.json'} is missing; "
                                 "rerun `rsdata run` for that corpus")
            shards.append(ShardInfo(str(rec.file.resolve()), rec.nsamples, rec.bytes, rec.sha256))
    if not shards:
        raise SampleDataError("the given corpora list no shards: nothing to train or evaluate on")
    return shards


def read_shard(shard: ShardInfo | str, read_data: bool = True, verify: bool = True) -> list[dict[str, Any]]:
    """All samples of one tar shard, in file order: ``{"__key__": key, ext: bytes, ...}``.

    Full-band ``tif`` members are skipped; ``read_data=False`` lists keys only. Reading goes
    through :mod:`rsdata.corpus.reader` (streamed, member names checked, nothing extracted, the
    sha256 checked against the manifest unless ``verify`` is off).
    """
    info = shard if isinstance(shard, ShardInfo) else ShardInfo(str(shard), 0)
    return list(iter_shard(info.path, info.record(), extensions=None if read_data else (),
                           skip=SKIP_EXTS, verify=verify))


def check_count(shard: ShardInfo, samples: list[dict[str, Any]]) -> None:
    if len(samples) != shard.nsamples:
        raise SampleDataError(f"shard {shard.path} holds {len(samples)} samples but its manifest says "
                             f"{shard.nsamples}: the corpus changed after its manifest was written; "
                             "rerun `rsdata run` for it")


def image_bytes(sample: dict[str, Any], shard: str) -> bytes:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    raise SampleDataError(f"sample {sample['__key__']!r} in {shard} has no jpg or png member")


def captions_of(sample: dict[str, Any], shard: str, all_captions: bool) -> list[str]:
    """The primary caption (``txt``), plus the json captions when ``all_captions``."""
    if "txt" not in sample:
        raise SampleDataError(
            f"sample {sample['__key__']!r} in {shard} has no txt member (the caption): image-text "
            "training needs captions; add a captioning stage (e.g. template_captions) to the recipe")
    primary = sample["txt"].decode("utf-8").strip()
    out = [primary] if primary else []
    if all_captions and sample.get("json"):
        try:
            meta = json.loads(sample["json"])
        except json.JSONDecodeError as exc:
            raise SampleDataError(f"sample {sample['__key__']!r} in {shard} has invalid json: "
                                 f"{exc}") from None
        for cap in meta.get("captions", []):
            text = str(cap.get("text", "")).strip() if isinstance(cap, dict) else ""
            if text and text not in out:
                out.append(text)
    if not out:
        raise SampleDataError(f"sample {sample['__key__']!r} in {shard} has an empty caption")
    return out


def key_hash(key: str, seed: int = 0) -> float:
    """A stable number in [0, 1) for a key (the same on every machine and in every process)."""
    return zlib.crc32(f"{seed}:{key}".encode("utf-8")) / 2**32


def is_holdout(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether ``key`` belongs to the held-out split of size ``fraction`` (stable by key).

    ``rsdata train --holdout F`` leaves these samples out of training and
    ``rsdata eval --split holdout --holdout F`` evaluates on exactly them.
    """
    return fraction > 0 and key_hash(key, seed) < fraction


def read_key_file(path: str | Path) -> frozenset[str]:
    """Sample keys listed in a text file, one per line (blank lines and ``#`` comments ignored)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"key list {p} not found") from None
    keys = frozenset(ln.split("#", 1)[0].strip() for ln in lines) - {""}
    if not keys:
        raise SampleDataError(f"key list {p} holds no keys (expected one sample key per line)")
    return keys


# -- synthetic samples ------------------------------------------------------------------------
SYNTHETIC_CHOICES = ("include", "exclude", "only")


def is_synthetic(meta: dict[str, Any] | None) -> bool:
    """Whether a sample's json marks it as generated: ``synthetic: true``, or an origin of type
    ``synthetic`` (a sample of the synthetic source) or root ``synthetic`` (a synthetic sample
    read again through a ``corpus`` source: rescored, filtered, recaptioned)."""
    if not isinstance(meta, dict):
        return False
    if meta.get("synthetic") is True:
        return True
    origin = meta.get("origin")
    if not isinstance(origin, dict):
        return False
    return "synthetic" in (origin.get("type"), origin.get("root"))


def synthetic_selects(mode: str, synthetic: bool) -> bool:
    """Whether ``--synthetic mode`` keeps a sample that is (or is not) synthetic."""
    if mode not in SYNTHETIC_CHOICES:
        raise InputError(f"--synthetic must be one of {', '.join(SYNTHETIC_CHOICES)}, not {mode!r}")
    return mode == "include" or (mode == "only") == synthetic


@dataclass(frozen=True)
class SyntheticSplit:
    """The keys of some corpora, in manifest order, with the set of synthetic ones."""

    keys: tuple[str, ...]
    synthetic: frozenset[str]

    def left_out(self, mode: str) -> frozenset[str]:
        """The keys ``--synthetic mode`` leaves out."""
        return frozenset(k for k in self.keys if not synthetic_selects(mode, k in self.synthetic))

    def describe(self, mode: str) -> str:
        n, s = len(self.keys), len(self.synthetic)
        kept = n - len(self.left_out(mode))
        return f"--synthetic {mode}: {kept} of {n} samples ({s} synthetic, {n - s} real)"


def synthetic_split(corpora: Iterable[str | Path], verify: bool = True) -> SyntheticSplit:
    """Read only the json members of the corpora and find their synthetic samples."""
    from rsdata.corpus.reader import Corpus

    keys: list[str] = []
    synthetic: set[str] = set()
    for corpus in corpora:
        for entry in Corpus(corpus, verify=verify).entries({"json"}):
            keys.append(entry.key)
            if "json" in entry.members and is_synthetic(entry.meta()):
                synthetic.add(entry.key)
    return SyntheticSplit(tuple(keys), frozenset(synthetic))
