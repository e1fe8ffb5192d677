"""The one record that flows through every stage: :class:`Sample`.

A sample is plain data (bytes, str, dicts of JSON values) so it pickles cleanly to worker
processes and Ray tasks. On disk it is one WebDataset entry::

    {key}.jpg | {key}.png   8-bit RGB rendering
    {key}.geotiff           optional full-band chip: a GeoTIFF (original dtype, CRS, transform,
                            colour interpretation); named so that default image decoders
                            (webdataset ``decode("pil")``, Hugging Face ``datasets``) leave it as
                            bytes; read it with :func:`rsdata.read_chip`
    {key}.txt               the primary caption
    {key}.json              ``meta``, valid against schemas/sample.schema.json
    {key}.{name}            extra members (``layout.png``, ``vqa.json``, ``boxes.json``, ...)

Extra members travel untouched from reader to writer: a stage that adds one sets
``sample.extra[name] = bytes``; nothing else needs to know about it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
IMAGE_FORMATS = ("jpg", "png")
# members every sample has a fixed meaning for; anything else is an extra member
CHIP_MEMBER = "geotiff"
LEGACY_CHIP_MEMBERS = ("tif",)  # what rsdata < 0.2 called the chip; read, never written
CORE_MEMBERS = frozenset(IMAGE_FORMATS) | {"txt", "json", CHIP_MEMBER, *LEGACY_CHIP_MEMBERS}
# the one member-name rule (what follows the key's dot): lower-case letters, digits, '_', '-',
# and dots between parts; e.g. ``json``, ``layout.png``, ``vqa.json``
MEMBER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$")


def sanitize_key(text: str) -> str:
    """Make ``text`` a WebDataset key: no dots (webdataset splits on them), no separators."""
    key = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    if not key:
        raise ValueError(f"cannot make a sample key from {text!r}")
    return key


def check_member_name(name: str) -> str:
    """Raise ``ValueError`` unless ``name`` is a valid member name (see ``MEMBER_PATTERN``)."""
    if not MEMBER_PATTERN.match(name) or ".." in name:
        raise ValueError(f"member name {name!r}: use lower-case letters, digits, '_' and '-', "
                         "with dots only between parts (e.g. layout.png)")
    return name


@dataclass
class Caption:
    """One caption and where it came from.

    ``kind`` is ``template`` (``provenance["template"]`` is the template id), ``llm``
    (model, prompt version), ``human`` (round id) or ``prompt`` (the prompt of a synthetic scene).
    """

    text: str
    kind: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind, **self.provenance}


@dataclass
class Sample:
    """One image-text pair on its way through the pipeline."""

    key: str
    image: bytes
    image_format: str = "jpg"
    meta: dict[str, Any] = field(default_factory=dict)
    tif: bytes | None = None
    extra: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not KEY_PATTERN.match(self.key):
            raise ValueError(
                f"sample key {self.key!r} may only hold letters, digits, '_' and '-' "
                "(WebDataset splits keys at dots)"
            )
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, not {self.image_format!r}")
        for name, value in self.extra.items():
            check_member_name(name)
            if name in CORE_MEMBERS:
                raise ValueError(f"extra member {name!r} of sample {self.key} is a core member name")
            if not isinstance(value, bytes):
                raise ValueError(f"extra member {name!r} of sample {self.key} must be bytes")
        self.meta.setdefault("captions", [])
        self.meta.setdefault("scores", {})

    # -- captions -------------------------------------------------------------------------
    @property
    def captions(self) -> list[dict[str, Any]]:
        return self.meta["captions"]

    @property
    def caption(self) -> str:
        """The primary caption (the first one), written as the ``txt`` member."""
        return self.captions[0]["text"] if self.captions else ""

    def add_caption(self, caption: Caption, primary: bool = False) -> None:
        if primary:
            self.captions.insert(0, caption.to_json())
        else:
            self.captions.append(caption.to_json())

    # -- WebDataset ---------------------------------------------------------------------------
    def to_wds(self) -> dict[str, Any]:
        """The dict ``webdataset.TarWriter.write`` takes (all values already bytes)."""
        entry: dict[str, Any] = {
            "__key__": self.key,
            self.image_format: self.image,
            "txt": self.caption.encode("utf-8"),
            "json": json.dumps(self.meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
        }
        if self.tif is not None:
            entry[CHIP_MEMBER] = self.tif
        for name in sorted(self.extra):
            entry[name] = self.extra[name]
        return entry

    @classmethod
    def from_wds(cls, entry: dict[str, Any]) -> "Sample":
        """Rebuild a sample from a raw (undecoded) WebDataset entry."""
        fmt = next((f for f in IMAGE_FORMATS if f in entry), None)
        if fmt is None:
            raise ValueError(f"entry {entry.get('__key__')!r} has no jpg or png member")
        meta = entry.get("json", b"{}")
        return cls(
            key=entry["__key__"],
            image=entry[fmt],
            image_format=fmt,
            meta=json.loads(meta) if isinstance(meta, (bytes, str)) else dict(meta),
            tif=next((entry[m] for m in (CHIP_MEMBER, *LEGACY_CHIP_MEMBERS) if m in entry), None),
            extra={k: v for k, v in entry.items() if k != "__key__" and k not in CORE_MEMBERS},
        )
