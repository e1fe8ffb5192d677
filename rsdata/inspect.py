"""``rsdata inspect DIR``: check a corpus against its manifest, summarise it, draw it.

The shards are streamed with :mod:`tarfile` (nothing is extracted to disk) and hashed while
they are read, so one pass checks every shard's size and sha256 and gathers the statistics.
Writes ``contact_sheet.png``, ``tag_histogram.png``, ``report.txt`` and ``summary.json``.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Union

from PIL import Image, ImageDraw, ImageFont, ImageOps

from rsdata.reports.llm_section import llm_summary, section_llm
from rsdata.annotation.report import annotation_summary, section_annotation
from rsdata.corpus.manifest import load_manifest
from rsdata.corpus.reader import iter_shard
from rsdata.corpus.samples import is_synthetic
from rsdata.errors import RsdataError
from rsdata.inputs import sha256_file
from rsdata.atomic import atomic_write_bytes

SUMMARY_FORMAT = "rsdata-inspect/1"
TOP_TAGS = 15
READ_EXTS = ("json", "txt", "jpg", "jpeg", "png")
IMAGE_EXTS = ("jpg", "jpeg", "png")

Font = Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]

# --- reading shards ---------------------------------------------------------------------------


@dataclass
class TarSample:
    """The members of one key: contents of the small ones (``READ_EXTS``), names of all."""

    key: str
    extensions: list[str] = field(default_factory=list)
    data: dict[str, bytes] = field(default_factory=dict)


@dataclass
class ShardCheck:
    path: str
    expected_bytes: int
    expected_sha256: str
    expected_samples: int
    nbytes: int = 0
    sha256: str = ""
    samples: int = 0
    read_error: str = ""
    problems: list[str] = field(default_factory=list)

    def finish(self) -> None:
        if not self.sha256:  # missing file: nothing more to compare
            return
        if self.nbytes != self.expected_bytes:
            self.problems.append(f"size is {self.nbytes:,} bytes, "
                                 f"manifest says {self.expected_bytes:,}")
        if self.sha256 != self.expected_sha256:
            self.problems.append(f"sha256 mismatch: file {self.sha256[:16]}..., "
                                 f"manifest {self.expected_sha256[:16]}...")
        if self.samples != self.expected_samples:
            self.problems.append(f"{self.samples} samples read, "
                                 f"manifest says {self.expected_samples}")
        if self.read_error:
            self.problems.append(self.read_error)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": not self.problems, "bytes": self.nbytes,
                "sha256": self.sha256, "samples": self.samples, "problems": self.problems}


def read_shard(path: Path, check: ShardCheck) -> Iterator[TarSample]:
    """Yield a shard's samples while hashing it (through the one corpus reader, so hostile
    members are refused the same way everywhere); problems go into ``check``, never raise."""
    if not path.is_file():
        check.problems.append("missing: the file does not exist")
        return

    def digest(nbytes: int, sha256: str) -> None:
        check.nbytes, check.sha256 = nbytes, sha256

    try:
        for raw in iter_shard(path, None, READ_EXTS, digest=digest, list_unread=True):
            key = raw.pop("__key__")
            sample = TarSample(key, list(raw), {k: v for k, v in raw.items() if v is not None})
            check.samples += 1
            yield sample
    except RsdataError as exc:
        check.read_error = f"unreadable tar after {check.samples} samples ({exc})"
        check.nbytes, check.sha256 = path.stat().st_size, sha256_file(path)
    check.finish()


def pick_indices(total: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(total)`` (centres of k equal parts)."""
    if total <= 0 or k <= 0:
        return []
    if k >= total:
        return list(range(total))
    return [(2 * i + 1) * total // (2 * k) for i in range(k)]


# --- statistics ------------------------------------------------------------------------------


@dataclass
class SheetItem:
    key: str
    caption: str
    image: bytes | None
    meta: dict[str, Any] | None = None  # the sample json (for --overlay)
    captions: list[str] = field(default_factory=list)  # every caption text (for --overlay)


def primary_caption(sample: TarSample, meta: dict[str, Any] | None) -> str:
    text = sample.data.get("txt", b"").decode("utf-8", errors="replace").strip()
    if not text and meta and meta.get("captions"):
        text = str(meta["captions"][0].get("text", "")).strip()
    return text


def sample_image(sample: TarSample) -> bytes | None:
    return next((sample.data[e] for e in IMAGE_EXTS if sample.data.get(e)), None)


@dataclass
class CorpusStats:
    """Per-sample numbers, accumulated while streaming."""

    samples: int = 0
    members: Counter[str] = field(default_factory=Counter)
    bad_json: int = 0
    no_json: int = 0
    no_image: int = 0
    duplicate_keys: int = 0
    synthetic: int = 0
    tag_samples: Counter[str] = field(default_factory=Counter)
    tag_phrase: dict[str, str] = field(default_factory=dict)
    captions_per_sample: list[int] = field(default_factory=list)
    primary_words: list[int] = field(default_factory=list)
    templates: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    gsd: list[float] = field(default_factory=list)
    crs: Counter[str] = field(default_factory=Counter)
    tile_size: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    source_license: dict[str, str] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def add(self, sample: TarSample) -> dict[str, Any] | None:
        self.samples += 1
        self.members.update(set(sample.extensions))
        self.duplicate_keys += sample.key in self._seen
        self._seen.add(sample.key)
        self.no_image += sample_image(sample) is None
        meta = self._parse(sample)
        if meta is not None:
            self._add_tags(meta)
            self._add_captions(meta)
            self._add_geo(meta)
            self._add_source(meta)
        self.primary_words.append(len(primary_caption(sample, meta).split()))
        return meta

    def _parse(self, sample: TarSample) -> dict[str, Any] | None:
        if "json" not in sample.data:
            self.no_json += 1
            return None
        try:
            meta = json.loads(sample.data["json"])
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            self.bad_json += 1
            return None
        return meta

    def _add_tags(self, meta: dict[str, Any]) -> None:
        visible = set()
        for tag in (meta.get("osm") or {}).get("tags", []):
            if tag.get("visible") and tag.get("tag"):
                visible.add(tag["tag"])
                self.tag_phrase.setdefault(tag["tag"], str(tag.get("phrase", "")))
        self.tag_samples.update(visible)

    def _add_captions(self, meta: dict[str, Any]) -> None:
        captions = meta.get("captions") or []
        self.captions_per_sample.append(len(captions))
        for cap in captions:
            self.kinds[str(cap.get("kind", "?"))] += 1
            if cap.get("template"):
                self.templates[str(cap["template"])] += 1

    def _add_geo(self, meta: dict[str, Any]) -> None:
        geo = meta.get("geo") or {}
        if isinstance(geo.get("gsd_m"), (int, float)):
            self.gsd.append(float(geo["gsd_m"]))
        if geo.get("crs"):
            self.crs[str(geo["crs"])] += 1
        size = geo.get("size")
        if isinstance(size, list) and len(size) == 2:
            self.tile_size[f"{size[0]}x{size[1]}"] += 1

    def _add_source(self, meta: dict[str, Any]) -> None:
        source = meta.get("source") or {}
        sid = str(source.get("id", "?"))
        self.by_source[sid] += 1
        self.source_license.setdefault(sid, str(source.get("license", "?")))
        self.synthetic += is_synthetic(meta)


@dataclass
class Scan:
    stats: CorpusStats
    checks: list[ShardCheck]
    sheet: list[SheetItem]


def scan_corpus(base: Path, manifest: dict[str, Any], samples: int) -> Scan:
    """Stream every shard once: check it, gather statistics, keep the contact-sheet samples."""
    picks = set(pick_indices(int(manifest["nsamples"]), samples))
    stats = CorpusStats()
    checks: list[ShardCheck] = []
    sheet: list[SheetItem] = []
    for entry in manifest["shards"]:
        check = ShardCheck(entry["path"], entry["bytes"], entry["sha256"], entry["nsamples"])
        checks.append(check)
        for sample in read_shard(base / entry["path"], check):
            index = stats.samples
            meta = stats.add(sample)
            if index in picks:
                caption = primary_caption(sample, meta)
                texts = [str(c.get("text", "")) for c in (meta or {}).get("captions") or []
                         if isinstance(c, dict)]
                sheet.append(SheetItem(sample.key, caption, sample_image(sample), meta, texts))
    return Scan(stats, checks, sheet)


# --- the summary (summary.json) --------------------------------------------------------------


def describe_numbers(values: list[int] | list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": round(statistics.fmean(values), 3),
            "median": statistics.median(values), "max": max(values)}


def top_tags(stats: CorpusStats, n: int = TOP_TAGS) -> list[dict[str, Any]]:
    ranked = sorted(stats.tag_samples.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"tag": tag, "phrase": stats.tag_phrase.get(tag, ""), "samples": count,
             "share": round(count / stats.samples, 4) if stats.samples else 0.0}
            for tag, count in ranked]


def ranked(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def build_summary(out_dir: Path, manifest: dict[str, Any], scan: Scan) -> dict[str, Any]:
    stats = scan.stats
    bad = [c.to_json() for c in scan.checks if c.problems]
    return {
        "format": SUMMARY_FORMAT,
        "status": manifest.get("status", "complete"),
        "failure": manifest.get("failure"),
        "corpus": {
            "name": manifest["name"], "dir": str(out_dir), "created": manifest["created"],
            "rsdata_version": manifest["rsdata_version"], "recipe_hash": manifest["recipe_hash"],
            "nsamples": manifest["nsamples"], "shards": len(manifest["shards"]),
            "bytes": sum(s["bytes"] for s in manifest["shards"]), "samples_read": stats.samples,
        },
        "integrity": {"ok": not bad and stats.samples == manifest["nsamples"],
                      "shards_checked": len(scan.checks), "bad_shards": bad},
        "samples": {"read": stats.samples, "members": ranked(stats.members),
                    "no_json": stats.no_json, "bad_json": stats.bad_json,
                    "no_image": stats.no_image,
                    "duplicate_keys": stats.duplicate_keys, "synthetic": stats.synthetic},
        "stages": [{"name": s["name"], "in": s["in"], "out": s["out"], "dropped": s["dropped"]}
                   for s in manifest["stages"]],
        "tags": {"distinct_visible": len(stats.tag_samples), "top": top_tags(stats)},
        "captions": {
            "total": sum(stats.captions_per_sample),
            "per_sample": describe_numbers(stats.captions_per_sample),
            "primary_words": describe_numbers(stats.primary_words),
            "templates": ranked(stats.templates), "kinds": ranked(stats.kinds),
        },
        "geo": {"gsd_m": describe_numbers(stats.gsd),
                "gsd_values": ranked(Counter(f"{g:g}" for g in stats.gsd)),
                "crs": ranked(stats.crs), "tile_size": ranked(stats.tile_size)},
        "sources": {
            "manifest": [{k: s.get(k) for k in ("path", "role", "license", "attribution")}
                         for s in manifest["sources"]],
            "samples_by_source": {sid: {"samples": n, "license": stats.source_license.get(sid, "?")}
                                  for sid, n in ranked(stats.by_source).items()},
        },
        "osm": manifest.get("osm") or None,
        "llm": llm_summary(manifest),
        "annotation": annotation_summary(out_dir, manifest),
    }


# --- the text report -------------------------------------------------------------------------


def fmt_num(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}".rstrip("0").rstrip(".")


def fmt_stats(d: dict[str, float] | None) -> str:
    if d is None:
        return "n/a"
    return ", ".join(f"{k} {fmt_num(d[k])}" for k in ("min", "mean", "median", "max"))


def fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def text_histogram(counts: dict[str, int], indent: str = "    ", width: int = 30) -> list[str]:
    if not counts:
        return [f"{indent}(none)"]
    top = max(counts.values())
    name_w = max(len(k) for k in counts)
    return [f"{indent}{k:<{name_w}}  {v:>6,}  {'#' * max(1, round(width * v / top))}"
            for k, v in counts.items()]


def section_header(s: dict[str, Any]) -> list[str]:
    c = s["corpus"]
    lines = [f"rsdata corpus '{c['name']}'  ({c['dir']})",
             f"  recipe {c['recipe_hash'][:12]}  |  rsdata {c['rsdata_version']}  |  "
             f"created {c['created']}",
             f"  {c['nsamples']:,} samples in {c['shards']} shards, {fmt_bytes(c['bytes'])} "
             f"({c['bytes']:,} bytes)"]
    if s.get("status") == "failed":
        lines.append(f"  FAILED RUN: {s.get('failure') or 'no reason recorded'}")
    if c["nsamples"] == 0:
        lines.append("  The corpus is empty: no samples were written (see the stage counts below).")
    return lines


def section_integrity(s: dict[str, Any]) -> list[str]:
    integ, c = s["integrity"], s["corpus"]
    lines = ["Shards (size and sha256 against the manifest)"]
    if not integ["shards_checked"]:
        lines.append("  no shards to check")
    elif not integ["bad_shards"]:
        lines.append(f"  OK: all {integ['shards_checked']} shards match the manifest")
    for bad in integ["bad_shards"]:
        lines.append(f"  MISMATCH {bad['path']}: {'; '.join(bad['problems'])}")
    if c["samples_read"] != c["nsamples"]:
        lines.append(f"  MISMATCH samples: {c['samples_read']:,} read from the shards, "
                     f"manifest says {c['nsamples']:,}")
    smp = s["samples"]
    labels = {"no_json": "without json", "bad_json": "with bad json",
              "no_image": "without an image", "duplicate_keys": "duplicate keys"}
    notes = [f"{smp[k]} {label}" for k, label in labels.items() if smp[k]]
    if notes:
        lines.append("  problems in samples: " + ", ".join(notes))
    if smp["members"]:
        lines.append("  members: " + ", ".join(f".{k} {v:,}" for k, v in smp["members"].items()))
    return lines


def section_stages(s: dict[str, Any]) -> list[str]:
    lines = ["Stages", f"  {'stage':<22} {'in':>8} {'out':>8}  dropped"]
    for st in s["stages"]:
        reasons = ", ".join(f"{r} {n:,}" for r, n in ranked(Counter(st["dropped"])).items())
        lines.append(f"  {st['name']:<22} {st['in']:>8,} {st['out']:>8,}  {reasons or '-'}")
    if not s["stages"]:
        lines.append("  (no stage counts in the manifest)")
    return lines


def section_tags(s: dict[str, Any]) -> list[str]:
    tags, n = s["tags"], s["samples"]["read"]
    lines = [f"Top {TOP_TAGS} OSM tags (samples where visible, of {n:,}; "
             f"{tags['distinct_visible']} distinct visible tags)"]
    if not tags["top"]:
        return lines + ["  (no visible tags)"]
    tag_w = max(len(t["tag"]) for t in tags["top"])
    phr_w = max(len(t["phrase"]) for t in tags["top"])
    for i, t in enumerate(tags["top"], 1):
        lines.append(f"  {i:>2}. {t['tag']:<{tag_w}}  {t['phrase']:<{phr_w}}  "
                     f"{t['samples']:>6,}  {100 * t['share']:5.1f}%")
    return lines


def section_captions(s: dict[str, Any]) -> list[str]:
    cap = s["captions"]
    return ["Captions",
            f"  {cap['total']:,} captions; per sample: {fmt_stats(cap['per_sample'])}",
            f"  primary caption length (words): {fmt_stats(cap['primary_words'])}",
            "  kinds:", *text_histogram(cap["kinds"]),
            "  templates:", *text_histogram(cap["templates"])]


def section_geo(s: dict[str, Any]) -> list[str]:
    geo = s["geo"]
    return ["Geometry",
            f"  GSD (m): {fmt_stats(geo['gsd_m'])}",
            f"  GSD values: {fmt_counts(geo['gsd_values'], ' m')}",
            f"  CRS: {fmt_counts(geo['crs'])}",
            f"  tile size (px): {fmt_counts(geo['tile_size'])}"]


def fmt_counts(counts: dict[str, int], unit: str = "") -> str:
    return ", ".join(f"{k}{unit} x {v:,}" for k, v in counts.items()) or "n/a"


def section_sources(s: dict[str, Any]) -> list[str]:
    src = s["sources"]
    lines = ["Sources"]
    for m in src["manifest"]:
        lines.append(f"  [{m['role']}] {m['path']}  license {m['license']}")
        lines.append(f"      {m['attribution']}")
    if src["samples_by_source"]:
        lines.append("  samples by source:")
        lines += [f"    {sid}  {v['samples']:,}  ({v['license']})"
                  for sid, v in src["samples_by_source"].items()]
    if s["samples"]["synthetic"]:
        lines.append(f"  synthetic samples: {s['samples']['synthetic']:,}")
    return lines


def section_osm(s: dict[str, Any]) -> list[str]:
    osm = s["osm"]
    if not osm:
        return []
    lines = ["OSM readers"]
    for src in osm.get("sources", []):
        counters = ", ".join(f"{k} {v}" for k, v in (src.get("stats") or {}).items()) or "-"
        lines.append(f"  {src.get('id', '?')}: {src.get('features', 0):,} features  ({counters})")
    if "features" in osm:
        lines.append(f"  total features: {osm['features']:,}")
    rest = {k: v for k, v in osm.items() if k not in ("sources", "features")}
    lines += [f"  {k}: {json.dumps(v, sort_keys=True)}" for k, v in rest.items()]
    return lines


def format_report(summary: dict[str, Any], files: dict[str, str]) -> str:
    sections = [section_header, section_integrity, section_stages, section_tags, section_captions,
                section_geo, section_sources, section_osm, section_llm, section_annotation]
    blocks = ["\n".join(lines) for lines in (f(summary) for f in sections) if lines]
    blocks.append("Files\n" + "\n".join(f"  {name}: {path}" for name, path in files.items()))
    return "\n\n".join(blocks) + "\n"


# --- drawing ---------------------------------------------------------------------------------

INK = (33, 37, 41)
MUTED = (108, 117, 125)
RULE = (222, 226, 230)
BAR = (76, 120, 168)
WHITE = (255, 255, 255)


@lru_cache(maxsize=None)
def font(size: int) -> Font:
    """Pillow's bundled scalable font (Pillow >= 10.1); its fixed bitmap font before that."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def line_height(f: Font) -> int:
    top, bottom = f.getbbox("Ag")[1::2]
    return int(bottom - top) + max(3, int(getattr(f, "size", 10) * 0.35))


def text_width(text: str, f: Font) -> float:
    return f.getlength(text)


def ellipsize(text: str, f: Font, width: float, force: bool = False) -> str:
    """``text`` cut to ``width`` pixels with '...' where cut (always with ``force``)."""
    if not force and text_width(text, f) <= width:
        return text
    text = text.rstrip(" .") if force else text
    while text and text_width(text + "...", f) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def wrap(text: str, f: Font, width: float, max_lines: int) -> list[str]:
    """Word-wrap ``text`` to ``width`` pixels; long words are cut, overflow ends in '...'."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if text_width(trial, f) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    lines = [ellipsize(line, f, width) for line in lines]
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [ellipsize(lines[max_lines - 1], f, width, force=True)]
    return lines


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def draw_title(draw: ImageDraw.ImageDraw, x: int, y: int, title: str, subtitle: str) -> int:
    """Draw a title and a muted subtitle; return the y below them."""
    draw.text((x, y), title, font=font(24), fill=INK)
    y += line_height(font(24)) + 2
    draw.text((x, y), subtitle, font=font(15), fill=MUTED)
    return y + line_height(font(15))


def thumbnail(item: SheetItem, size: int) -> Image.Image:
    tile = Image.new("RGB", (size, size), (240, 240, 240))
    try:
        if item.image is None:
            raise ValueError("no image")
        from rsdata.imaging import open_image

        with open_image(item.image, f"sample {item.key}") as im:
            im = ImageOps.contain(im.convert("RGB"), (size, size))
        tile.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    except (OSError, ValueError, RsdataError):
        d = ImageDraw.Draw(tile)
        d.text((size / 2, size / 2), "no image", font=font(16), fill=MUTED, anchor="mm")
    return tile


@dataclass
class SheetLayout:
    cols: int
    thumb: int = 256
    pad: int = 22
    margin: int = 32
    caption_lines: int = 5

    @property
    def width(self) -> int:
        return 2 * self.margin + self.cols * self.thumb + (self.cols - 1) * self.pad


def sheet_columns(n: int) -> int:
    return max(1, min(n, max(4, math.ceil(math.sqrt(n)))))


SYNTHETIC_BADGE = (200, 40, 140)


def draw_cell(canvas: Image.Image, item: SheetItem, x: int, y: int, lay: SheetLayout) -> None:
    canvas.paste(thumbnail(item, lay.thumb), (x, y))
    draw = ImageDraw.Draw(canvas)
    synthetic = is_synthetic(item.meta)
    draw.rectangle((x - 1, y - 1, x + lay.thumb, y + lay.thumb),
                   outline=SYNTHETIC_BADGE if synthetic else RULE, width=3 if synthetic else 1)
    if synthetic:  # generated scenes are never mistaken for photographs on the sheet
        label = "SYNTHETIC"
        w = int(text_width(label, font(13))) + 10
        draw.rectangle((x, y, x + w, y + line_height(font(13)) + 6), fill=SYNTHETIC_BADGE)
        draw.text((x + 5, y + 3), label, font=font(13), fill=WHITE)
    ty = y + lay.thumb + 8
    draw.text((x, ty), ellipsize(item.key, font(13), lay.thumb), font=font(13), fill=MUTED)
    ty += line_height(font(13)) + 2
    for line in wrap(item.caption or "(no caption)", font(15), lay.thumb, lay.caption_lines):
        draw.text((x, ty), line, font=font(15), fill=INK)
        ty += line_height(font(15))


def cell_height(item: SheetItem, lay: SheetLayout) -> int:
    lines = len(wrap(item.caption or "(no caption)", font(15), lay.thumb, lay.caption_lines))
    return lay.thumb + 8 + line_height(font(13)) + 2 + lines * line_height(font(15))


def draw_contact_sheet(items: list[SheetItem], title: str, subtitle: str) -> Image.Image:
    if not items:
        return draw_empty(title, subtitle, "no samples")
    lay = SheetLayout(cols=sheet_columns(len(items)))
    rows = [items[i:i + lay.cols] for i in range(0, len(items), lay.cols)]
    heights = [max(cell_height(it, lay) for it in row) for row in rows]
    top = lay.margin + line_height(font(24)) + line_height(font(15)) + 22
    height = top + sum(heights) + lay.pad * (len(rows) - 1) + lay.margin
    canvas = Image.new("RGB", (lay.width, height), WHITE)
    draw_title(ImageDraw.Draw(canvas), lay.margin, lay.margin, title, subtitle)
    y = top
    for row, row_h in zip(rows, heights):
        for col, item in enumerate(row):
            draw_cell(canvas, item, lay.margin + col * (lay.thumb + lay.pad), y, lay)
        y += row_h + lay.pad
    return canvas


def draw_empty(title: str, subtitle: str, message: str, width: int = 900) -> Image.Image:
    canvas = Image.new("RGB", (width, 320), WHITE)
    draw = ImageDraw.Draw(canvas)
    y = draw_title(draw, 32, 32, title, subtitle) + 20
    draw.rounded_rectangle((32, y, width - 32, 320 - 32), radius=12, outline=RULE, width=2)
    draw.text((width / 2, (y + 320 - 32) / 2), message, font=font(28), fill=MUTED, anchor="mm")
    return canvas


def nice_step(top: int, ticks: int = 5) -> int:
    raw = max(1.0, top / ticks)
    base = 10 ** math.floor(math.log10(raw))
    return int(next(m * base for m in (1, 2, 5, 10) if m * base >= raw))


def draw_tag_histogram(tags: list[dict[str, Any]], title: str, subtitle: str) -> Image.Image:
    if not tags:
        return draw_empty(title, subtitle, "no visible tags")
    margin, row_h, bar_h, plot_w = 32, 40, 24, 560
    f_label, f_tag, f_count = font(16), font(12), font(14)
    label_w = int(max(max(text_width(t["phrase"] or t["tag"], f_label), text_width(t["tag"], f_tag))
                      for t in tags)) + 16
    count_w = int(max(text_width(count_label(t), f_count) for t in tags)) + 12
    width = max(margin * 2 + label_w + plot_w + count_w, 720)
    top = margin + line_height(font(24)) + line_height(font(15)) + 28
    height = top + row_h * len(tags) + 44 + margin
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw_title(draw, margin, margin, title, subtitle)
    x0, most = margin + label_w, max(t["samples"] for t in tags)
    step = nice_step(most)
    scale = plot_w / (math.ceil(most / step) * step)
    draw_axis(draw, x0, top, top + row_h * len(tags), step, most, scale)
    for i, t in enumerate(tags):
        y = top + i * row_h
        draw.text((x0 - 10, y + row_h / 2 - 1), t["phrase"] or t["tag"], font=f_label, fill=INK,
                  anchor="rb")
        draw.text((x0 - 10, y + row_h / 2 + 1), t["tag"], font=f_tag, fill=MUTED, anchor="rt")
        y_bar = y + (row_h - bar_h) / 2
        x1 = x0 + max(2.0, t["samples"] * scale)
        draw.rectangle((x0, y_bar, x1, y_bar + bar_h), fill=BAR)
        draw.text((x1 + 6, y + row_h / 2), count_label(t), font=f_count, fill=INK, anchor="lm")
    return canvas


def count_label(tag: dict[str, Any]) -> str:
    return f"{tag['samples']:,}  ({100 * tag['share']:.0f}%)"


def draw_axis(draw: ImageDraw.ImageDraw, x0: int, y_top: int, y_bottom: int, step: int,
              most: int, scale: float) -> None:
    value = 0
    while value <= math.ceil(most / step) * step:
        x = x0 + value * scale
        draw.line((x, y_top - 4, x, y_bottom), fill=RULE if value else MUTED, width=1)
        draw.text((x, y_bottom + 6), f"{value:,}", font=font(13), fill=MUTED, anchor="mt")
        value += step
    draw.text((x0, y_bottom + 26), "samples where the tag is visible", font=font(13), fill=MUTED,
              anchor="lt")


# --- the map over the picture (--overlay) ----------------------------------------------------
#
# Each contact-sheet sample is drawn twice, side by side: the picture as stored, and the same
# picture with the OSM geometries over it (by class colour) and the 3x3 grid the captions' position
# words use; its captions follow below. The geometries come from the sample json
# (``meta["osm"]["objects"]``: {"tag", "phrase", "geom": polygon|line|point, "pixels": [part, ...]}
# with every part a list of [x, y] in the stored image's pixels) when the join kept them, else they
# are recomputed from the OSM sources of the corpus's recipe (``manifest["recipe"]`` stages of type
# osm_join), clipped to the tile (``meta["geo"]``: bounds, crs, transform from pixels to the CRS).

#: Overlay classes in legend order: (name, RGB). Designations (reserves, boundaries) are drawn
#: as outlines only: they are on the map, not on the ground.
OVERLAY_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("building", (230, 25, 75)),
    ("road", (255, 140, 0)),
    ("track / path", (255, 225, 25)),
    ("railway", (20, 20, 20)),
    ("water", (0, 130, 255)),
    ("trees / vegetation", (60, 200, 75)),
    ("farmland / crops", (190, 245, 60)),
    ("built-up land use", (250, 150, 200)),
    ("leisure / amenity", (70, 240, 240)),
    ("designation (not visible)", (240, 50, 230)),
    ("other", (200, 200, 200)),
)
OVERLAY_COLORS = dict(OVERLAY_CLASSES)
GRID_COLOR = (255, 255, 255, 150)
_TRACKS = {"track", "path", "footway", "bridleway", "cycleway", "steps", "trail"}
_VEGETATION = {"wood", "forest", "scrub", "heath", "grassland", "grass", "meadow", "tree",
               "tree_row", "shrub", "village_green", "wetland"}
_FARMLAND = {"farmland", "orchard", "vineyard", "farmyard", "pasture", "animal_keeping",
             "allotments", "greenhouse_horticulture", "plant_nursery", "meadow"}
_WATER_LANDUSE = {"reservoir", "basin", "pond", "aquaculture"}
_DESIGNATIONS = {"leisure=nature_reserve", "landuse=conservation", "boundary=protected_area",
                 "boundary=national_park", "boundary=administrative", "landuse=military"}
_BUILT_UP = {"residential", "commercial", "industrial", "retail", "construction", "brownfield",
             "garages", "education", "religious", "railway", "landfill", "quarry", "cemetery"}


def overlay_class(tag: str) -> str:
    """The overlay class of an OSM ``key=value`` tag (``class:<source>=...`` land cover too)."""
    key, _, value = str(tag).partition("=")
    value = value.split(";")[0].strip()
    if tag in _DESIGNATIONS or key in ("boundary", "protect_class", "protected_area", "place"):
        return "designation (not visible)"
    if key == "building":
        return "building"
    if key == "highway":
        return "track / path" if value in _TRACKS else "road"
    if key == "railway":
        return "railway"
    if key in ("waterway", "water") or (key == "natural" and value in ("water", "bay")) \
            or (key == "landuse" and value in _WATER_LANDUSE):
        return "water"
    if key in ("natural", "wetland") or (key == "landuse" and value in _VEGETATION):
        return "trees / vegetation" if value in _VEGETATION or key == "wetland" else "other"
    if key == "landuse":
        if value in _FARMLAND:
            return "farmland / crops"
        if value in _VEGETATION:
            return "trees / vegetation"
        return "built-up land use" if value in _BUILT_UP else "other"
    if key in ("leisure", "amenity", "tourism", "golf"):
        return "leisure / amenity"
    if key.startswith("class:"):
        words = value.lower()
        if any(w in words for w in ("water", "river", "pond")):
            return "water"
        if any(w in words for w in ("crop", "farm", "field", "orchard", "vine")):
            return "farmland / crops"
        if any(w in words for w in ("tree", "forest", "wood", "shrub", "bush", "grass", "veg")):
            return "trees / vegetation"
        if any(w in words for w in ("built", "building", "urban", "settlement")):
            return "building"
    return "other"


def tile_transform(geo: dict[str, Any]) -> tuple[float, float, float, float, float, float] | None:
    """The affine (a, b, c, d, e, f) from tile pixels to CRS coordinates (from the bounds when
    the json has no transform)."""
    if isinstance(geo.get("transform"), list) and len(geo["transform"]) == 6:
        return tuple(float(v) for v in geo["transform"])  # type: ignore[return-value]
    bounds, size = geo.get("bounds"), geo.get("size")
    if not (isinstance(bounds, list) and len(bounds) == 4
            and isinstance(size, list) and len(size) == 2):
        return None
    x0, y0, x1, y1 = (float(v) for v in bounds)
    return ((x1 - x0) / size[0], 0.0, x0, 0.0, -(y1 - y0) / size[1], y1)


def stored_objects(meta: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The geometries the join kept in the sample json, or None when it kept none."""
    objects = ((meta or {}).get("osm") or {}).get("objects")
    if not isinstance(objects, list):
        return None
    out = []
    for obj in objects:
        if not isinstance(obj, dict) or not isinstance(obj.get("pixels"), list):
            continue
        tag = obj.get("tag") or (f"{obj['key']}={obj['value']}" if obj.get("key") else "")
        out.append({"tag": str(tag), "phrase": str(obj.get("phrase") or tag),
                    "geom": str(obj.get("geom") or "polygon"), "pixels": obj["pixels"]})
    return out


@dataclass
class OverlayGeometries:
    """Per sheet key the objects to draw (in stored-image pixels), and what was not possible."""

    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    source: str = ""  # "json", "recipe", "json + recipe" or "none"
    note: str = ""


def _recipe_base(base: Path, manifest: dict[str, Any]) -> Path | None:
    """Where the recipe's relative input paths resolve: the recipe file's folder."""
    rp = manifest.get("recipe_path")
    if not rp:
        return None
    path = Path(rp)
    candidates = ([path] if path.is_absolute()
                  else [Path.cwd() / path, base / path, base.parent / path])
    return next((c.resolve().parent for c in candidates if c.is_file()), None)


def recompute_objects(base: Path, manifest: dict[str, Any], items: list[SheetItem]
                      ) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Objects of each item from the recipe's osm_join sources; (objects by key, problem)."""
    stages = [s for s in (manifest.get("recipe") or {}).get("stages") or []
              if isinstance(s, dict) and s.get("type") == "osm_join"]
    if not stages:
        return {}, "the recipe has no osm_join stage"
    recipe_dir = _recipe_base(base, manifest)
    if recipe_dir is None:
        return {}, (f"recipe file {manifest.get('recipe_path')!r} not found (run inspect from the "
                    "folder rsdata run ran in)")
    metas = [(it.key, it.meta) for it in items if it.meta and (it.meta.get("geo") or {}).get("crs")]
    boxes = [b for b in (_wgs84_box(m["geo"]) for _, m in metas) if b is not None]
    if not boxes:
        return {}, "the samples have no geo bounds"
    margin = 0.001
    bbox = (min(b[0] for b in boxes) - margin, min(b[1] for b in boxes) - margin,
            max(b[2] for b in boxes) + margin, max(b[3] for b in boxes) + margin)
    features: list[tuple[Any, str, str]] = []  # (WGS84 geometry, tag, phrase)
    problems: list[str] = []
    for stage_cfg in stages:
        features += _stage_features(stage_cfg, recipe_dir, bbox, problems)
    out = {key: _clip_to_tile(features, meta) for key, meta in metas}
    return out, "; ".join(problems)


def _wgs84_box(geo: dict[str, Any]) -> list[float] | None:
    """The tile's WGS84 box, from its bounds in its CRS (else the json's bounds_wgs84)."""
    bounds = geo.get("bounds")
    if isinstance(bounds, list) and len(bounds) == 4:
        try:
            from pyproj import CRS, Transformer

            crs = CRS.from_user_input(geo["crs"])
            if crs.to_epsg() == 4326:
                return [float(v) for v in bounds]
            tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
            return list(tr.transform_bounds(*bounds, densify_pts=21))
        except Exception:  # noqa: BLE001 - fall back on the json's own WGS84 box
            pass
    box_ = geo.get("bounds_wgs84")
    return [float(v) for v in box_] if isinstance(box_, list) and len(box_) == 4 else None


def _stage_features(stage_cfg: dict[str, Any], recipe_dir: Path,
                    bbox: tuple[float, float, float, float], problems: list[str]
                    ) -> list[tuple[Any, str, str]]:
    from rsdata.osm.join import KEY_PRIORITY, OsmJoin
    from rsdata.osm.readers import read_source

    cfg = {k: v for k, v in stage_cfg.items() if k != "type"}
    if cfg.get("vocabulary") and not Path(cfg["vocabulary"]).is_absolute():
        cfg["vocabulary"] = str(recipe_dir / cfg["vocabulary"])
    stage = OsmJoin(cfg)
    maps, _ = stage.class_maps()
    keys, vocab = stage.keys(), stage.vocabulary()

    def rank(key: str) -> int:
        return KEY_PRIORITY.index(key) if key in KEY_PRIORITY else len(KEY_PRIORITY)

    out = []
    for i, spec in enumerate(cfg.get("sources") or []):
        if "path" not in spec:
            problems.append(f"source {i} is not a file (Overpass sources are not re-read)")
            continue
        path = Path(spec["path"])
        path = path if path.is_absolute() else recipe_dir / path
        try:
            fs = read_source(spec, path, bbox, keys, maps[i])
        except RsdataError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        for geom, tags in zip(fs.geometries, fs.tags):
            found = [(k, str(v)) for k, v in tags.items()
                     if k in keys and vocab.phrase(k, str(v)) is not None]
            if not found:
                continue
            k, v = min(found, key=lambda kv: rank(kv[0]))
            phrase = vocab.phrase(k, v)
            out.append((geom, f"{k}={v.split(';')[0].strip()}", phrase.singular if phrase else v))
    return out


def _clip_to_tile(features: list[tuple[Any, str, str]],
                  meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The features inside one tile, in the stored image's pixels."""
    import numpy as np
    import shapely
    from pyproj import CRS, Transformer

    geo = meta["geo"]
    affine = tile_transform(geo)
    if affine is None or not features:
        return []
    width, height = geo["size"]
    a, b, c, d, e, f = affine
    det = a * e - b * d
    if det == 0:
        return []
    crs = CRS.from_user_input(geo["crs"])
    to_crs = (None if crs.to_epsg() == 4326
              else Transformer.from_crs("EPSG:4326", crs, always_xy=True))
    tile = shapely.box(0, 0, width, height)

    def to_pixels(xy: "np.ndarray") -> "np.ndarray":
        if to_crs is not None:
            xy = np.column_stack(to_crs.transform(xy[:, 0], xy[:, 1]))
        x, y = xy[:, 0] - c, xy[:, 1] - f
        return np.column_stack(((e * x - b * y) / det, (-d * x + a * y) / det))

    out = []
    for geom, tag, phrase in features:
        try:
            pix = shapely.transform(geom, to_pixels)
            if not pix.is_valid:
                pix = shapely.make_valid(pix)
            clipped = shapely.intersection(pix, tile)
        except Exception:  # noqa: BLE001 - one bad geometry never stops the sheet
            continue
        if clipped.is_empty:
            continue
        kind, parts = _pixel_parts(clipped)
        if parts:
            out.append({"tag": tag, "phrase": phrase, "geom": kind, "pixels": parts})
    return out


def _pixel_parts(geom: Any) -> tuple[str, list[list[list[float]]]]:
    """(polygon|line|point, parts as lists of [x, y]): polygon parts are exterior rings."""
    parts: list[list[list[float]]] = []
    kinds = set()
    for g in getattr(geom, "geoms", [geom]):
        if g.is_empty:
            continue
        if g.geom_type == "Polygon":
            kinds.add("polygon")
            parts.append([[round(x, 2), round(y, 2)] for x, y in g.exterior.coords])
        elif g.geom_type in ("LineString", "LinearRing"):
            kinds.add("line")
            parts.append([[round(x, 2), round(y, 2)] for x, y in g.coords])
        elif g.geom_type == "Point":
            kinds.add("point")
            parts.append([[round(g.x, 2), round(g.y, 2)]])
        elif hasattr(g, "geoms"):
            kind, sub = _pixel_parts(g)
            kinds.add(kind)
            parts += sub
    kind = next((k for k in ("polygon", "line", "point") if k in kinds), "point")
    return kind, parts


def overlay_geometries(base: Path, manifest: dict[str, Any],
                       items: list[SheetItem]) -> OverlayGeometries:
    """The objects to draw on each sheet item: from its json, else from the recipe's sources."""
    result = OverlayGeometries()
    missing = []
    for it in items:
        objs = stored_objects(it.meta)
        if objs is None:
            missing.append(it)
        else:
            result.objects[it.key] = objs
    sources = ["json"] if len(missing) < len(items) else []
    if missing:
        try:
            found, problem = recompute_objects(base, manifest, missing)
        except (RsdataError, OSError, ValueError, ImportError) as exc:
            found, problem = {}, f"{type(exc).__name__}: {exc}"
        result.objects.update(found)
        if found:
            sources.append("recipe")
        result.note = problem
    result.source = " + ".join(sources) or "none"
    return result


def _scale_pixels(obj: dict[str, Any], scale: float, ox: float,
                  oy: float) -> list[list[tuple[float, float]]]:
    out = []
    for part in obj.get("pixels") or []:
        pts = [(ox + float(p[0]) * scale, oy + float(p[1]) * scale) for p in part
               if isinstance(p, (list, tuple)) and len(p) >= 2]
        if pts:
            out.append(pts)
    return out


def draw_overlay_tile(image: bytes | None, objects: list[dict[str, Any]], size: int,
                      key: str = "", grid: bool = True) -> Image.Image:
    """The tile at ``size`` px (contained, centred) with the objects and the 3x3 grid over it."""
    tile = Image.new("RGB", (size, size), (240, 240, 240))
    scale, ox, oy, w, h = 1.0, 0.0, 0.0, size, size
    try:
        if image is None:
            raise ValueError("no image")
        from rsdata.imaging import open_image

        with open_image(image, f"sample {key}") as im:
            iw, ih = im.size
            im = ImageOps.contain(im.convert("RGB"), (size, size))
        w, h = im.width, im.height
        ox, oy = (size - w) // 2, (size - h) // 2
        scale = w / iw if iw else 1.0
        tile.paste(im, (int(ox), int(oy)))
    except (OSError, ValueError, RsdataError):
        ImageDraw.Draw(tile).text((size / 2, size / 2), "no image", font=font(16), fill=MUTED,
                                  anchor="mm")
    layer = Image.new("RGBA", tile.size, (0, 0, 0, 0))
    fill_draw = ImageDraw.Draw(layer)
    order = {"polygon": 0, "line": 1, "point": 2}
    line_w = max(1, round(size / 128))
    for obj in sorted(objects, key=lambda o: order.get(o.get("geom", ""), 3)):
        cls = overlay_class(obj.get("tag", ""))
        rgb = OVERLAY_COLORS[cls]
        kind = obj.get("geom")
        for pts in _scale_pixels(obj, scale, ox, oy):
            if kind == "polygon" and len(pts) >= 3:
                if cls != "designation (not visible)":
                    fill_draw.polygon(pts, fill=(*rgb, 70))
                fill_draw.line(pts + [pts[0]], fill=(*rgb, 255), width=line_w, joint="curve")
            elif kind == "line" and len(pts) >= 2:
                fill_draw.line(pts, fill=(*rgb, 255), width=line_w + 1, joint="curve")
            else:
                x, y = pts[0]
                r = line_w + 2
                fill_draw.ellipse((x - r, y - r, x + r, y + r), fill=(*rgb, 255),
                                  outline=(0, 0, 0, 255))
    if grid:
        for i in (1, 2):
            gx, gy = ox + w * i / 3, oy + h * i / 3
            fill_draw.line((gx, oy, gx, oy + h - 1), fill=GRID_COLOR, width=1)
            fill_draw.line((ox, gy, ox + w - 1, gy), fill=GRID_COLOR, width=1)
    return Image.alpha_composite(tile.convert("RGBA"), layer).convert("RGB")


def _drawn_summary(objects: list[dict[str, Any]], meta: dict[str, Any] | None) -> str:
    counts = Counter(str(o.get("phrase") or o.get("tag")) for o in objects)
    text = ", ".join(f"{p} {n}" for p, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    cov = ((meta or {}).get("osm") or {}).get("coverage")
    frac = cov.get("fraction") if isinstance(cov, dict) else None
    partial = isinstance(frac, (int, float)) and frac < 0.995
    # where the map is declared complete: outside, counts are lower bounds (not "how much is drawn")
    prefix = f"map complete over {100 * frac:.0f}%; " if partial else ""
    return f"{prefix}drawn: {text or 'nothing'}"


@dataclass
class OverlayLayout:
    cols: int = 2
    thumb: int = 256
    gap: int = 8
    pad: int = 28
    margin: int = 32
    caption_lines: int = 3

    @property
    def cell_width(self) -> int:
        return 2 * self.thumb + self.gap

    @property
    def width(self) -> int:
        return 2 * self.margin + self.cols * self.cell_width + (self.cols - 1) * self.pad


def _overlay_text_lines(item: SheetItem, objects: list[dict[str, Any]], lay: OverlayLayout
                        ) -> list[tuple[str, Font, tuple[int, int, int]]]:
    lines: list[tuple[str, Font, tuple[int, int, int]]] = [
        (ellipsize(item.key, font(13), lay.cell_width), font(13), MUTED)]
    captions = item.captions or ([item.caption] if item.caption else [])
    for i, cap in enumerate(captions or ["(no caption)"]):
        for line in wrap(f"{i + 1}. {cap}" if len(captions) > 1 else cap, font(15),
                         lay.cell_width, lay.caption_lines):
            lines.append((line, font(15), INK))
    for line in wrap(_drawn_summary(objects, item.meta), font(13), lay.cell_width, 2):
        lines.append((line, font(13), MUTED))
    return lines


def _legend_height(lay: OverlayLayout) -> int:
    per_row = max(1, (lay.width - 2 * lay.margin) // 250)
    rows = math.ceil((len(OVERLAY_CLASSES) + 1) / per_row)
    return rows * 24


def _draw_legend(canvas: Image.Image, x0: int, y0: int, lay: OverlayLayout) -> None:
    draw = ImageDraw.Draw(canvas)
    per_row = max(1, (lay.width - 2 * lay.margin) // 250)
    entries: list[tuple[str, tuple[int, int, int] | None]] = [*OVERLAY_CLASSES]
    entries.append(("3x3 grid (caption positions)", None))
    for i, (name, rgb) in enumerate(entries):
        x, y = x0 + (i % per_row) * 250, y0 + (i // per_row) * 24
        if rgb is None:
            draw.rectangle((x, y + 2, x + 22, y + 16), fill=(90, 90, 90))
            draw.line((x + 11, y + 2, x + 11, y + 16), fill=WHITE)
            draw.line((x, y + 9, x + 22, y + 9), fill=WHITE)
        elif name.startswith("designation"):
            draw.rectangle((x, y + 2, x + 22, y + 16), outline=rgb, width=2)
        else:
            draw.rectangle((x, y + 2, x + 22, y + 16), fill=rgb, outline=INK)
        draw.text((x + 30, y + 9), name, font=font(14), fill=INK, anchor="lm")


def draw_overlay_sheet(items: list[SheetItem], geoms: OverlayGeometries, title: str,
                       subtitle: str) -> Image.Image:
    """Each item as picture | picture with the map and the grid, captions below; a legend on top."""
    if not items:
        return draw_empty(title, subtitle, "no samples")
    lay = OverlayLayout(cols=min(2, len(items)))
    texts = [_overlay_text_lines(it, geoms.objects.get(it.key, []), lay) for it in items]
    heights = [lay.thumb + 8 + sum(line_height(f) for _, f, _ in t) for t in texts]
    rows = [list(range(i, min(i + lay.cols, len(items)))) for i in range(0, len(items), lay.cols)]
    row_h = [max(heights[i] for i in row) for row in rows]
    top = lay.margin + line_height(font(24)) + line_height(font(15)) + 16
    legend_y = top
    top += _legend_height(lay) + 12
    height = top + sum(row_h) + lay.pad * (len(rows) - 1) + lay.margin
    canvas = Image.new("RGB", (lay.width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw_title(draw, lay.margin, lay.margin, title, subtitle)
    _draw_legend(canvas, lay.margin, legend_y, lay)
    y = top
    for row, rh in zip(rows, row_h):
        for col, i in enumerate(row):
            it = items[i]
            x = lay.margin + col * (lay.cell_width + lay.pad)
            canvas.paste(draw_overlay_tile(it.image, [], lay.thumb, it.key, grid=False), (x, y))
            drawn = draw_overlay_tile(it.image, geoms.objects.get(it.key, []), lay.thumb, it.key)
            canvas.paste(drawn, (x + lay.thumb + lay.gap, y))
            for dx in (0, lay.thumb + lay.gap):
                draw.rectangle((x + dx - 1, y - 1, x + dx + lay.thumb, y + lay.thumb), outline=RULE)
            ty = y + lay.thumb + 8
            for text, f, fill in texts[i]:
                draw.text((x, ty), text, font=f, fill=fill)
                ty += line_height(f)
        y += rh + lay.pad
    return canvas


# --- entry point -----------------------------------------------------------------------------


def write_outputs(out: Path, summary: dict[str, Any], scan: Scan,
                  overlay: OverlayGeometries | None = None) -> dict[str, str]:
    """Draw and write the PNGs (``contact_sheet_overlay.png`` too when ``overlay`` is given);
    return the paths of every output file."""
    c = summary["corpus"]
    files = {name: str(out / name) for name in
             ("contact_sheet.png", "tag_histogram.png", "report.txt", "summary.json")}
    recipe = f"recipe {c['recipe_hash'][:12]}"
    shown = f"{len(scan.sheet)} of {c['samples_read']:,} samples, evenly spread"
    sheet_sub = f"{shown if scan.sheet else 'empty corpus'}  |  {recipe}"
    sheet = draw_contact_sheet(scan.sheet, f"{c['name']}: contact sheet", sheet_sub)
    atomic_write_bytes(out / "contact_sheet.png", png_bytes(sheet))
    tags = summary["tags"]["top"]
    hist_sub = (f"top {len(tags)} of {summary['tags']['distinct_visible']} visible OSM tags, "
                f"by samples (of {c['samples_read']:,})  |  {recipe}" if tags else recipe)
    hist = draw_tag_histogram(tags, f"{c['name']}: OSM tags", hist_sub)
    atomic_write_bytes(out / "tag_histogram.png", png_bytes(hist))
    files.update(write_task_sheet(out, scan.sheet, c["name"], recipe))  # tasks.png (vqa, grounding)
    if overlay is not None:
        where = {"json": "geometries from the sample json", "recipe": "geometries re-read from "
                 "the recipe's OSM sources", "json + recipe": "geometries from the sample json "
                 "and the recipe's OSM sources"}.get(overlay.source, "no geometries found")
        note = f" ({overlay.note})" if overlay.note else ""
        sub = f"{shown if scan.sheet else 'empty corpus'}  |  {where}{note}  |  {recipe}"
        sheet = draw_overlay_sheet(scan.sheet, overlay, f"{c['name']}: map over picture", sub)
        atomic_write_bytes(out / "contact_sheet_overlay.png", png_bytes(sheet))
        files["contact_sheet_overlay.png"] = str(out / "contact_sheet_overlay.png")
    return files


def inspect_corpus(out_dir: Path, samples: int = 12, out: Path | None = None,
                   overlay: bool = False) -> str:
    """Check and summarise the corpus in ``out_dir``; write PNGs, report and summary to ``out``;
    returns the report. ``overlay`` also draws ``contact_sheet_overlay.png`` (the OSM
    geometries and the 3x3 grid over each contact-sheet tile, beside its captions)."""
    return run_inspect(out_dir, samples, out, overlay)[0]


def run_inspect(out_dir: Path, samples: int = 12, out: Path | None = None,
                overlay: bool = False) -> tuple[str, dict[str, Any]]:
    """Like :func:`inspect_corpus`, and also return the summary (``summary["integrity"]["ok"]``
    says whether every shard matched the manifest)."""
    out_dir = Path(out_dir)
    base = out_dir.parent if out_dir.is_file() else out_dir
    manifest = load_manifest(out_dir, allow_failed=True)
    out = Path(out) if out is not None else base / "inspect"
    scan = scan_corpus(base, manifest, samples)
    summary = build_summary(base, manifest, scan)
    geoms = overlay_geometries(base, manifest, scan.sheet) if overlay else None
    files = write_outputs(out, summary, scan, geoms)
    if geoms is not None:
        summary["overlay"] = {"geometries": geoms.source, "note": geoms.note,
                              "objects": {k: len(v) for k, v in geoms.objects.items()}}
    summary["contact_sheet_keys"] = [item.key for item in scan.sheet]
    summary["files"] = files
    report = format_report(summary, files)
    atomic_write_bytes(out / "report.txt", report.encode("utf-8"))
    summary_text = json.dumps(summary, indent=2, ensure_ascii=False)
    atomic_write_bytes(out / "summary.json", summary_text.encode("utf-8"))
    return report, summary


# --- tasks: grounding boxes and QA pairs (tasks.png) ------------------------------------------
#
# Drawn when the contact-sheet samples carry the vqa / grounding / scene_label stages' output
# (``meta["grounding"]``, ``meta["vqa"]``, ``meta["scene"]``): each tile with its referents' boxes
# (and pixel geometry when the grounding stage kept it), numbered; below it the scene label, the
# numbered referring expressions in their box's colour, then the question-answer pairs.

TASK_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))
TASK_TILES = 6  # tiles on tasks.png at most
TASK_THUMB = 384
TASK_QA_LINES = 8


def task_items(items: list[SheetItem], n: int = TASK_TILES) -> list[SheetItem]:
    """Sheet samples with grounding items or QA pairs, richest first (stable)."""
    def richness(it: SheetItem) -> int:
        m = it.meta or {}
        return len((m.get("grounding") or {}).get("items") or []) + len((m.get("vqa") or {}).get("pairs") or [])

    rich = [it for it in items if richness(it) > 0]
    return sorted(rich, key=lambda it: -richness(it))[:n]


def draw_task_tile(item: SheetItem, size: int = TASK_THUMB) -> Image.Image:
    """The tile with its grounding boxes (and geometry), each numbered in its colour."""
    tile = thumbnail(item, size).convert("RGBA")
    meta = item.meta or {}
    g = meta.get("grounding") or {}
    w, h = (g.get("size") or (meta.get("geo") or {}).get("size") or [size, size])[:2]
    sx, sy = size / float(w or size), size / float(h or size)
    layer = Image.new("RGBA", tile.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    objects = (meta.get("osm") or {}).get("objects") or []
    for i, it in enumerate(g.get("items") or []):
        color = TASK_COLORS[i % len(TASK_COLORS)]
        ref = it.get("referent") or {}
        parts = ref.get("pixels") or [part for k in ref.get("objects") or []
                                      if isinstance(k, int) and 0 <= k < len(objects)
                                      for part in (objects[k].get("pixels") or [])]
        for part in parts:
            pts = [(float(x) * sx, float(y) * sy) for x, y, *_ in part]
            if len(pts) >= 2:
                draw.line(pts, fill=color + (200,), width=2)
        x0, y0, x1, y1 = (float(v) for v in ref.get("box", (0, 0, 0, 0)))
        draw.rectangle((x0 * sx, y0 * sy, x1 * sx, y1 * sy), outline=color + (255,), width=2)
        label = str(i + 1)
        lw = text_width(label, font(14)) + 6
        lx = min(max(0.0, x0 * sx), size - lw)
        ly = min(max(0.0, y0 * sy), size - 18)
        draw.rectangle((lx, ly, lx + lw, ly + 18), fill=color + (230,))
        draw.text((lx + 3, ly + 1), label, font=font(14), fill=WHITE)
    return Image.alpha_composite(tile, layer).convert("RGB")


def task_lines(item: SheetItem, width: int) -> list[tuple[str, tuple[int, int, int], int]]:
    """(text, colour, font size) lines under a task tile."""
    meta = item.meta or {}
    out: list[tuple[str, tuple[int, int, int], int]] = [(ellipsize(item.key, font(13), width), MUTED, 13)]
    scene = meta.get("scene")
    if isinstance(scene, dict):
        tags = ", ".join(scene.get("labels") or []) or "-"
        out.append((ellipsize(f"scene: {scene.get('label') or 'none'}  (tags: {tags})", font(15), width),
                    INK, 15))
    for i, it in enumerate((meta.get("grounding") or {}).get("items") or []):
        color = TASK_COLORS[i % len(TASK_COLORS)]
        for j, line in enumerate(wrap(f"{i + 1}  {it.get('expression', '')}", font(15), width, 2)):
            out.append((line if j == 0 else "    " + line, color, 15))
    for p in ((meta.get("vqa") or {}).get("pairs") or [])[:TASK_QA_LINES]:
        text = f"Q: {p.get('question', '')}  A: {p.get('answer', '')}"
        for line in wrap(text, font(14), width, 2):
            out.append((line, INK, 14))
    return out


def draw_task_sheet(items: list[SheetItem], title: str, subtitle: str) -> Image.Image:
    """tasks.png: a few tiles with their boxes, expressions and QA pairs."""
    if not items:
        return draw_empty(title, subtitle, "no grounding items or QA pairs")
    cols = min(3, len(items))
    pad, margin, size = 26, 32, TASK_THUMB
    rows = [items[i:i + cols] for i in range(0, len(items), cols)]
    texts = {id(it): task_lines(it, size) for it in items}

    def text_h(it: SheetItem) -> int:
        return sum(line_height(font(s)) for _, _, s in texts[id(it)])

    heights = [size + 8 + max(text_h(it) for it in row) for row in rows]
    top = margin + line_height(font(24)) + line_height(font(15)) + 22
    width = 2 * margin + cols * size + (cols - 1) * pad
    canvas = Image.new("RGB", (width, top + sum(heights) + pad * (len(rows) - 1) + margin), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw_title(draw, margin, margin, title, subtitle)
    y = top
    for row, row_h in zip(rows, heights):
        for col, it in enumerate(row):
            x = margin + col * (size + pad)
            canvas.paste(draw_task_tile(it, size), (x, y))
            draw.rectangle((x - 1, y - 1, x + size, y + size), outline=RULE)
            ty = y + size + 8
            for text, color, s in texts[id(it)]:
                draw.text((x, ty), text, font=font(s), fill=color)
                ty += line_height(font(s))
        y += row_h + pad
    return canvas


def write_task_sheet(out: Path, items: list[SheetItem], name: str, recipe: str) -> dict[str, str]:
    """Write ``tasks.png`` when the sheet's samples have grounding items or QA pairs."""
    chosen = task_items(items)
    if not chosen:
        return {}
    sub = f"{len(chosen)} sheet samples with boxes and QA pairs  |  {recipe}"
    atomic_write_bytes(out / "tasks.png", png_bytes(draw_task_sheet(chosen, f"{name}: grounding and VQA", sub)))
    return {"tasks.png": str(out / "tasks.png")}
