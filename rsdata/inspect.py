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
from rsdata.corpus.manifest import load_manifest
from rsdata.corpus.reader import iter_shard
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
        self.synthetic += bool(meta.get("synthetic"))


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
                sheet.append(SheetItem(sample.key, caption, sample_image(sample)))
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
                section_geo, section_sources, section_osm, section_llm]
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
        with Image.open(io.BytesIO(item.image)) as im:
            im = ImageOps.contain(im.convert("RGB"), (size, size))
        tile.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    except (OSError, ValueError):
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


def draw_cell(canvas: Image.Image, item: SheetItem, x: int, y: int, lay: SheetLayout) -> None:
    canvas.paste(thumbnail(item, lay.thumb), (x, y))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((x - 1, y - 1, x + lay.thumb, y + lay.thumb), outline=RULE)
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


# --- entry point -----------------------------------------------------------------------------


def write_outputs(out: Path, summary: dict[str, Any], scan: Scan) -> dict[str, str]:
    """Draw and write the PNGs; return the paths of every output file."""
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
    return files


def inspect_corpus(out_dir: Path, samples: int = 12, out: Path | None = None) -> str:
    """Check and summarise the corpus in ``out_dir``; write PNGs, report and summary to ``out``;
    returns the report."""
    return run_inspect(out_dir, samples, out)[0]


def run_inspect(out_dir: Path, samples: int = 12, out: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Like :func:`inspect_corpus`, and also return the summary (``summary["integrity"]["ok"]``
    says whether every shard matched the manifest)."""
    out_dir = Path(out_dir)
    base = out_dir.parent if out_dir.is_file() else out_dir
    manifest = load_manifest(out_dir, allow_failed=True)
    out = Path(out) if out is not None else base / "inspect"
    scan = scan_corpus(base, manifest, samples)
    summary = build_summary(base, manifest, scan)
    files = write_outputs(out, summary, scan)
    summary["contact_sheet_keys"] = [item.key for item in scan.sheet]
    summary["files"] = files
    report = format_report(summary, files)
    atomic_write_bytes(out / "report.txt", report.encode("utf-8"))
    summary_text = json.dumps(summary, indent=2, ensure_ascii=False)
    atomic_write_bytes(out / "summary.json", summary_text.encode("utf-8"))
    return report, summary
