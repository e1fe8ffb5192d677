"""Evaluation sets: our shards, Karpathy-style caption JSON + images, folder-per-class.

* **Shards** (``rsdata run`` output directories): every sample is an image with its captions
  (``txt`` first, then the other captions in its ``json``), optionally only the keys held out
  from training (``holdout``; the same split as ``rsdata train --holdout``).
* **Karpathy JSON** (RSICD, UCM-captions, Sydney-captions, RSITMD): ``images[].filename``,
  ``images[].sentences[].raw``, ``images[].split``; image files in a folder.
* **Folder per class** (UC Merced, AID, ...): ``ROOT/<class>/<image>``, for zero-shot
  classification with prompt templates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rsdata.errors import InputError
from rsdata.corpus.samples import captions_of, image_bytes, is_holdout, list_shards, read_shard

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
DEFAULT_TEMPLATES = (
    "an aerial image of {}.",
    "a satellite image of {}.",
    "an aerial photograph of {}.",
    "a remote sensing image of {}.",
    "{} seen from above.",
)


class EvalDataError(InputError):
    """An evaluation set is empty, malformed, or refers to missing images."""


@dataclass
class ImageRef:
    """An image to evaluate: bytes already in memory, or a file path."""

    id: str
    data: bytes | None = None
    path: Path | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


@dataclass
class RetrievalSet:
    """Images, captions, and for every caption the index of its image."""

    name: str
    images: list[ImageRef] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_image: list[int] = field(default_factory=list)

    def add(self, image: ImageRef, captions: list[str]) -> None:
        self.caption_image += [len(self.images)] * len(captions)
        self.captions += captions
        self.images.append(image)


@dataclass
class ClassSet:
    """Images with integer labels into ``classes`` (display names used in prompts)."""

    name: str
    classes: list[str]
    images: list[ImageRef] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def _require_nonempty(n: int, what: str, hint: str) -> None:
    if n == 0:
        raise EvalDataError(f"{what} is empty: nothing to evaluate. {hint}")


# -- shards ---------------------------------------------------------------------------------------
def shard_retrieval_set(corpora: list[str], holdout: float = 0.0, holdout_seed: int = 0,
                        all_captions: bool = True, max_images: int | None = None,
                        keep: Callable[[str], bool] | None = None) -> RetrievalSet:
    """Retrieval set from ``rsdata run`` outputs; ``holdout > 0`` keeps only the held-out keys."""
    name = "+".join(Path(c).name or str(c) for c in corpora) + (f"[holdout={holdout:g}]" if holdout else "")
    out = RetrievalSet(name)
    for shard in list_shards(corpora):
        for sample in read_shard(shard):
            key = sample["__key__"]
            if holdout > 0 and not is_holdout(key, holdout, holdout_seed):
                continue
            if keep is not None and not keep(key):
                continue
            out.add(ImageRef(key, data=image_bytes(sample, shard.path)),
                    captions_of(sample, shard.path, all_captions))
            if max_images and len(out.images) >= max_images:
                return out
    _require_nonempty(len(out.images), f"evaluation set {name}",
                      "With --holdout, use the fraction the model was trained with (and a corpus large "
                      "enough to hold some keys out)." if holdout else "The corpus holds no samples.")
    return out


# -- Karpathy JSON ---------------------------------------------------------------------------------
def karpathy_entries(path: Path) -> list[dict[str, Any]]:
    """The ``images`` list of a Karpathy-style caption file, each entry with a ``filename``.

    Shared by evaluation and the eval-leakage guard (rsdata.filtering.leakage).
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"caption file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise EvalDataError(f"{path} is not valid JSON: {exc}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise EvalDataError(f"{path} is not a Karpathy-style caption file: expected a top-level object "
                            "with an 'images' list (images[].filename, images[].sentences[].raw, "
                            "images[].split)")
    for i, entry in enumerate(images):
        if not isinstance(entry, dict) or not entry.get("filename"):
            raise EvalDataError(f"{path}: images[{i}] has no 'filename'")
    return images


def read_karpathy(json_path: str | Path, image_dir: str | Path, split: str | None = "test",
                  max_images: int | None = None) -> RetrievalSet:
    """A Karpathy-format caption file (RSICD / UCM-captions / Sydney-captions / RSITMD)."""
    path, root = Path(json_path), Path(image_dir)
    images = karpathy_entries(path)
    if not root.is_dir():
        raise InputError(f"image folder {root} not found (the folder holding the files named in "
                         f"{path.name})")
    splits: dict[str, int] = {}
    out = RetrievalSet(f"{path.stem}[{split or 'all'}]")
    missing: list[str] = []
    for i, entry in enumerate(images):
        entry_split = str(entry.get("split", ""))
        splits[entry_split] = splits.get(entry_split, 0) + 1
        if split and entry_split != split:
            continue
        sentences = entry.get("sentences") or []
        captions = [str(s.get("raw", "")).strip() for s in sentences if isinstance(s, dict)]
        captions = [c for c in captions if c]
        if not captions:
            raise EvalDataError(f"{path}: images[{i}] ({entry['filename']}) has no sentences[].raw caption")
        file = root / entry.get("filepath", "") / entry["filename"]
        if not file.is_file():
            file = root / entry["filename"]
        if not file.is_file():
            missing.append(entry["filename"])
            continue
        out.add(ImageRef(str(entry["filename"]), path=file), captions)
        if max_images and len(out.images) >= max_images:
            break
    if missing:
        raise EvalDataError(f"{len(missing)} image(s) named in {path} are not in {root}, e.g. "
                            f"{', '.join(missing[:3])}; point --images at the folder holding them")
    found = ", ".join(f"{k or '(none)'} ({v})" for k, v in sorted(splits.items()))
    _require_nonempty(len(out.images), f"split {split!r} of {path}", f"Splits in the file: {found}.")
    return out


# -- folder per class --------------------------------------------------------------------------------
def class_display_name(folder: str) -> str:
    """``DenseResidential`` / ``dense_residential`` -> ``dense residential``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", folder)
    return re.sub(r"[_\-\s]+", " ", words).strip().lower()


def read_class_folders(root: str | Path, classnames: dict[str, str] | None = None,
                       max_per_class: int | None = None) -> ClassSet:
    """``ROOT/<class>/<image>``; ``classnames`` maps folder names to prompt names."""
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"class folder root {base} not found")
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise EvalDataError(f"{base} holds no class folders: expected ROOT/<class name>/<images>")
    names = classnames or {}
    out = ClassSet(base.name, [names.get(f.name, class_display_name(f.name)) for f in folders])
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        for file in files[:max_per_class] if max_per_class else files:
            out.images.append(ImageRef(f"{folder.name}/{file.relative_to(folder)}", path=file))
            out.labels.append(label)
    _require_nonempty(len(out.images), f"class folders under {base}",
                      f"Put images ({', '.join(IMAGE_SUFFIXES)}) into the class folders.")
    return out


def read_templates(path: str | Path | None) -> list[str]:
    """Prompt templates (one per line, each with ``{}``), or the defaults."""
    if path is None:
        return list(DEFAULT_TEMPLATES)
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    bad = [ln for ln in lines if "{}" not in ln]
    if bad or not lines:
        raise EvalDataError(f"{path}: every template line needs a '{{}}' for the class name"
                            + (f" (e.g. {bad[0]!r})" if bad else "; the file is empty"))
    return lines


def read_classnames(path: str | Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise EvalDataError(f"{path} must map folder names to class names (a JSON object)")
    return {str(k): str(v) for k, v in data.items()}
