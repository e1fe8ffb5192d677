"""Input-source manifests (manifests/*.yaml): checksums, licenses and attribution of inputs.

A recipe names the manifests that describe its inputs. Every file a run reads is hashed; when
a manifest lists it, the checksum must match (a changed or corrupt input stops the run) and its
license and attribution travel into every sample and into the corpus manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rsdata import schemas
from rsdata.errors import InputError

UNKNOWN_LICENSE = "unknown"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class InputFile:
    path: Path
    role: str
    sha256: str
    bytes: int
    license: str
    attribution: str
    manifest: str | None

    def to_json(self, display: str) -> dict[str, Any]:
        return {"path": display, "role": self.role, "sha256": self.sha256, "bytes": self.bytes,
                "license": self.license, "attribution": self.attribution, "manifest": self.manifest}


class InputRegistry:
    """The files described by a recipe's input manifests, by absolute path."""

    def __init__(self, manifest_paths: list[Path]) -> None:
        self.entries: dict[Path, tuple[dict[str, Any], str]] = {}
        for mpath in manifest_paths:
            if not mpath.is_file():
                raise InputError(f"input manifest not found: {mpath} (listed under inputs: in the recipe)")
            try:
                data = yaml.safe_load(mpath.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise InputError(f"{mpath} is not valid YAML: {exc}") from None
            problems = schemas.errors("inputs", data)
            if problems:
                raise InputError(f"{mpath} is not a valid input manifest "
                                 f"(schemas/inputs.schema.json): {problems[0]}")
            for entry in data["files"]:
                self.entries[(mpath.parent / entry["path"]).resolve()] = (entry, str(mpath))
        self._hashes: dict[Path, str] = {}

    def describe(self, path: Path, role: str) -> InputFile:
        """Hash ``path``; check it against its manifest entry; return its provenance."""
        path = path.resolve()
        if not path.is_file():
            raise InputError(f"input file not found: {path}")
        digest = self._hashes.get(path) or sha256_file(path)
        self._hashes[path] = digest
        size = path.stat().st_size
        found = self.entries.get(path)
        if found is None:
            return InputFile(path, role, digest, size, UNKNOWN_LICENSE,
                             "unknown (not listed in any input manifest)", None)
        entry, manifest = found
        if entry["sha256"] != digest:
            raise InputError(
                f"checksum mismatch for {path}: {manifest} says {entry['sha256'][:12]}..., the file "
                f"is {digest[:12]}.... The file changed or is corrupt: restore it, or update the "
                "manifest entry if the change is intended.")
        return InputFile(path, entry.get("role", role), digest, size, entry["license"],
                         entry["attribution"], manifest)
