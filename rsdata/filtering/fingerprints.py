"""Fingerprints of a set of images: byte checksum plus the perceptual hashes of all 8 variants."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsdata.filtering.hashing import N_VARIANTS, image_hashes


@dataclass
class Fingerprints:
    """``ids[i]`` has byte checksum ``sha256[i]`` and hashes ``phash[i]``/``dhash[i]`` (uint64[8])."""

    ids: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    phash: np.ndarray = field(default_factory=lambda: np.zeros((0, N_VARIANTS), dtype=np.uint64))
    dhash: np.ndarray = field(default_factory=lambda: np.zeros((0, N_VARIANTS), dtype=np.uint64))

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: Path) -> None:
        """Write an ``.npz`` (through a temporary file and a rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, ids=np.array(self.ids, dtype=str), sha256=np.array(self.sha256, dtype=str),
                 phash=self.phash, dhash=self.dhash)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Fingerprints":
        with np.load(path) as data:
            return cls(ids=data["ids"].tolist(), sha256=data["sha256"].tolist(),
                       phash=data["phash"].astype(np.uint64), dhash=data["dhash"].astype(np.uint64))


class FingerprintBuilder:
    """Collects fingerprints one image at a time."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.sha: list[str] = []
        self.p: list[np.ndarray] = []
        self.d: list[np.ndarray] = []

    def add(self, ident: str, data: bytes) -> None:
        """Fingerprint encoded image bytes; PIL errors propagate (callers decide what to do)."""
        hashes = image_hashes(data)
        self.ids.append(ident)
        self.sha.append(hashlib.sha256(data).hexdigest())
        self.p.append(hashes.phash)
        self.d.append(hashes.dhash)

    def build(self) -> Fingerprints:
        if not self.ids:
            return Fingerprints()
        return Fingerprints(ids=list(self.ids), sha256=list(self.sha),
                            phash=np.stack(self.p).astype(np.uint64), dhash=np.stack(self.d).astype(np.uint64))
