"""The eval-leakage guard: find corpus samples that (near-)duplicate evaluation images.

An evaluation set is one of:

* a **folder** of images (searched recursively: jpg, jpeg, png, tif, tiff, bmp, webp);
* a **Karpathy-style JSON** (RSICD, UCM-captions, Sydney-captions, RSITMD:
  ``images[].filename``, optional ``images[].filepath``, ``images[].split``) with its image
  folder (default: ``images/`` next to the JSON, else the JSON's own folder);
* an rsdata **corpus** (a directory with ``manifest.json``).

Matches are exact (same image bytes), near (perceptual hashes within the distances, under
any flip or right-angle rotation) or, with a scorer, semantic (image-embedding cosine above a
threshold). A corpus sample that matches any evaluation image is dropped (reason
``eval_leakage``), and the leakage report lists every match.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsdata.errors import InputError
from rsdata.filtering.dedup import HashIndex, cosine_matches
from rsdata.filtering.fingerprints import FingerprintBuilder, Fingerprints

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
REPORT_FORMAT = "rsdata-leakage/1"


@dataclass(frozen=True)
class EvalSpec:
    """Where evaluation images are: ``path`` (folder, Karpathy JSON or corpus), ``images``
    (the image folder of a Karpathy JSON) and ``splits`` (Karpathy splits to use; all if None)."""

    path: str
    images: str | None = None
    splits: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "images": self.images, "splits": list(self.splits) if self.splits else None}


def eval_kind(path: Path) -> str:
    """``corpus``, ``karpathy`` or ``folder``; a clear error for anything else."""
    if path.is_dir():
        return "corpus" if (path / "manifest.json").is_file() else "folder"
    if path.is_file() and path.suffix.lower() == ".json":
        return "karpathy"
    if not path.exists():
        raise InputError(f"evaluation set {path} does not exist; give a folder of images, a "
                         "Karpathy-style JSON (e.g. dataset_rsicd.json) or an rsdata corpus directory")
    raise InputError(f"evaluation set {path} is a {path.suffix or 'plain'} file; give a folder of "
                     "images, a Karpathy-style JSON (images[].filename) or an rsdata corpus directory")


def folder_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def karpathy_images(json_path: Path, images_dir: Path | None, splits: tuple[str, ...] | None) -> list[Path]:
    """The image paths a Karpathy-style JSON lists (optionally only some splits)."""
    from rsdata.evaluate.datasets import karpathy_entries

    images = karpathy_entries(json_path)
    if images_dir is None:
        images_dir = json_path.parent / "images" if (json_path.parent / "images").is_dir() else json_path.parent
    paths: list[Path] = []
    for item in images:
        if splits and item.get("split") not in splits:
            continue
        sub = images_dir / item["filepath"] if item.get("filepath") else images_dir
        path = sub / item["filename"]
        if not path.is_file() and item.get("filepath"):
            path = images_dir / item["filename"]
        paths.append(path)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(paths)} images listed in {json_path} are not in "
                         f"{images_dir} (first: {missing[0]}); pass the image folder with --leakage-images")
    return paths


def iter_eval_images(spec: EvalSpec) -> tuple[str, Iterator[tuple[str, bytes]]]:
    """(kind, iterator of (image id, encoded bytes)) of one evaluation set."""
    path = Path(spec.path)
    kind = eval_kind(path)
    if kind == "corpus":
        from rsdata.corpus import Corpus

        corpus = Corpus(path)
        want = {"jpg", "png"}
        return kind, ((e.key, e.image()) for e in corpus.entries(want))
    if kind == "karpathy":
        files = karpathy_images(path, Path(spec.images) if spec.images else None, spec.splits)
        base = Path(spec.images) if spec.images else files[0].parent if files else path.parent
    else:
        files = folder_images(path)
        base = path
    if not files:
        raise InputError(f"evaluation set {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                         "an empty evaluation set guards against nothing")

    def read() -> Iterator[tuple[str, bytes]]:
        for f in files:
            try:
                ident = str(f.relative_to(base))
            except ValueError:
                ident = str(f)
            yield ident, f.read_bytes()

    return kind, read()


@dataclass
class EvalIndex:
    """Fingerprints of every evaluation image, which set each came from, and what was unreadable."""

    fingerprints: Fingerprints
    set_of: list[int]
    sets: list[dict[str, Any]]
    embeddings: np.ndarray | None = None
    unreadable: list[str] = field(default_factory=list)
    _tables: dict[tuple[int, int], HashIndex] = field(default_factory=dict, repr=False)
    _sha: dict[str, int] | None = field(default=None, repr=False)

    def hash_index(self, max_phash: int, max_dhash: int) -> HashIndex:
        """The hash index of the evaluation images (built once per pair of distances)."""
        key = (max_phash, max_dhash)
        if key not in self._tables:
            fp = self.fingerprints
            self._tables[key] = HashIndex(fp.phash, fp.dhash, max_phash, max_dhash)
        return self._tables[key]

    def by_sha256(self) -> dict[str, int]:
        """Byte checksum -> first evaluation image with it (built once)."""
        if self._sha is None:
            self._sha = {}
            for j, sha in enumerate(self.fingerprints.sha256):
                self._sha.setdefault(sha, j)
        return self._sha

    def save(self, path: Path) -> None:
        """Write the fingerprints, set membership and set descriptions (``.npz``; no embeddings)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        fp = self.fingerprints
        np.savez(tmp, ids=np.array(fp.ids, dtype=str), sha256=np.array(fp.sha256, dtype=str),
                 phash=fp.phash, dhash=fp.dhash, set_of=np.array(self.set_of, dtype=np.int64),
                 sets=np.array(json.dumps(self.sets)), unreadable=np.array(self.unreadable, dtype=str))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "EvalIndex":
        with np.load(path) as d:
            fp = Fingerprints(ids=d["ids"].tolist(), sha256=d["sha256"].tolist(),
                              phash=d["phash"].astype(np.uint64), dhash=d["dhash"].astype(np.uint64))
            return cls(fp, d["set_of"].tolist(), json.loads(str(d["sets"])), None, d["unreadable"].tolist())


def build_eval_index(specs: list[EvalSpec], scorer: Any = None, batch: int = 64) -> EvalIndex:
    """Fingerprint (and, with a scorer, embed) every image of the evaluation sets."""
    from rsdata.imaging import decode_rgb

    builder = FingerprintBuilder()
    set_of: list[int] = []
    sets: list[dict[str, Any]] = []
    unreadable: list[str] = []
    embeddings: list[np.ndarray] = []
    pending: list[Any] = []

    def flush() -> None:
        if pending:
            embeddings.append(scorer.embed_images(pending))
            pending.clear()

    for si, spec in enumerate(specs):
        kind, images = iter_eval_images(spec)
        n = bad = 0
        for ident, data in images:
            try:
                rgb = decode_rgb(data, ident) if scorer is not None else None
                builder.add(ident, data)  # appends nothing when the image cannot be read
            except (OSError, ValueError, InputError):
                unreadable.append(f"{spec.path}: {ident}")
                bad += 1
                continue
            set_of.append(si)
            n += 1
            if rgb is not None:
                pending.append(rgb)
                if len(pending) >= batch:
                    flush()
        if n == 0:
            raise InputError(f"no image of evaluation set {spec.path} could be read ({bad} unreadable); "
                             "an empty evaluation set guards against nothing")
        sets.append({**spec.to_json(), "kind": kind, "n_images": n, "unreadable": bad})
    if scorer is not None:
        flush()
    emb = np.concatenate(embeddings) if embeddings else None
    return EvalIndex(builder.build(), set_of, sets, emb, unreadable)


@dataclass
class Leak:
    """The best match of one corpus sample among the evaluation images."""

    corpus_index: int
    eval_index: int
    kind: str  # exact | near | semantic
    phash_distance: int | None = None
    dhash_distance: int | None = None
    cosine: float | None = None


def find_leaks(corpus: Fingerprints, index: EvalIndex, max_phash: int, max_dhash: int,
               corpus_embeddings: np.ndarray | None = None,
               semantic_threshold: float | None = None) -> dict[int, Leak]:
    """Corpus index -> its best match (exact, then nearest hash, then highest cosine)."""
    leaks: dict[int, Leak] = {}
    ev = index.fingerprints
    if len(corpus) == 0 or len(ev) == 0:
        return leaks
    by_sha = index.by_sha256()
    for i, sha in enumerate(corpus.sha256):
        if sha in by_sha:
            leaks[i] = Leak(i, by_sha[sha], "exact", 0, 0)
    hits = index.hash_index(max_phash, max_dhash).query(corpus.phash[:, 0], corpus.dhash[:, 0])
    for q, t, dp, dd in zip(hits.query.tolist(), hits.target.tolist(), hits.phash_distance.tolist(),
                            hits.dhash_distance.tolist()):
        old = leaks.get(q)
        if old is None or (old.kind == "near" and (dp, dd) < (old.phash_distance, old.dhash_distance)):
            leaks[q] = Leak(q, t, "near", dp, dd)
    if semantic_threshold is not None and corpus_embeddings is not None and index.embeddings is not None:
        qi, ti, cos = cosine_matches(corpus_embeddings, index.embeddings, semantic_threshold)
        for q, t, c in zip(qi.tolist(), ti.tolist(), cos.tolist()):
            old = leaks.get(q)
            if old is None or (old.kind == "semantic" and c > (old.cosine or -1)):
                leaks[q] = Leak(q, t, "semantic", cosine=round(float(c), 6))
    return leaks


def leakage_report(corpus_dir: str, keys: list[str], leaks: dict[int, Leak], index: EvalIndex,
                   settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: evaluation sets, settings, counts by kind and set, and every match."""
    matches = []
    by_set: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for i in sorted(leaks):
        leak = leaks[i]
        eval_set = index.sets[index.set_of[leak.eval_index]]["path"]
        by_set[eval_set] += 1
        by_kind[leak.kind] += 1
        row: dict[str, Any] = {"key": keys[i], "eval_set": eval_set,
                               "eval_image": index.fingerprints.ids[leak.eval_index], "kind": leak.kind}
        for name in ("phash_distance", "dhash_distance", "cosine"):
            value = getattr(leak, name)
            if value is not None:
                row[name] = value
        matches.append(row)
    return {"format": REPORT_FORMAT, "corpus": corpus_dir, "eval_sets": index.sets, "settings": settings,
            "corpus_samples": len(keys), "leaked_samples": len(leaks), "by_kind": dict(sorted(by_kind.items())),
            "by_eval_set": dict(sorted(by_set.items())), "unreadable_eval_images": index.unreadable,
            "matches": matches}
