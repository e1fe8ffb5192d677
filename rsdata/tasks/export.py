"""``rsdata export``: a corpus in the layouts other tools read.

* ``rsvqa``: the RSVQA JSON layout (Lobry et al. 2020, as RSVQA-LR/HR ship it):
  ``{prefix}_split_{split}_images.json`` (``images[]: id, questions_ids, original_name,
  active``), ``{prefix}_split_{split}_questions.json`` (``questions[]: id, img_id, type,
  question, answers_ids, active, date_added, people_id``), ``{prefix}_split_{split}_answers.json``
  (``answers[]: id, question_id, answer, active, date_added, people_id``), the same for all
  splits in ``all_images.json`` / ``all_questions.json`` / ``all_answers.json``, and the images
  as ``Images/{img_id}.{jpg|png|tif}``. Question types are RSVQA's (presence, count, comp, area)
  plus ``position``; provenance (template, tags, OSM objects) rides along in ``rsdata``.
* ``coco``: grounding items as COCO JSON, one file per split,
  ``annotations/instances_{split}.json`` (``images``, ``annotations`` with ``bbox`` [x, y, w,
  h] in pixels, ``category_id``, ``segmentation`` (the polygon when the grounding stage stored
  it, else the box), ``area``, the referring ``expressions`` and ``box_crs``; ``categories`` by
  OSM tag), and ``refs.json`` in the RefCOCO manner (``ref_id``, ``ann_id``, ``image_id``,
  ``split``, ``sentences[].raw``); images in ``images/``.
* ``karpathy``: captions as a Karpathy-style file, ``dataset_{name}.json`` (``images[]:
  filename, filepath, imgid, split, sentences[]: raw, tokens, imgid, sentid``), images in
  ``images/``: ``rsdata eval --karpathy OUT/dataset_NAME.json --images OUT/images`` reads it,
  as do the RSICD / UCM-captions evaluation scripts.
* ``classes``: the scene-labelled tiles as a folder per class, ``OUT/<class>/<key>.jpg``, with
  ``classnames.json`` (folder -> prompt name) and ``labels.json`` (key -> label, multi-label
  tags, split): ``rsdata eval --classes OUT --classnames OUT/classnames.json`` reads it for
  zero-shot classification. Tiles without a label are left out (counted).

Splits are stable by key: ``test`` holds the keys ``rsdata train --holdout F`` leaves out
(``--holdout F``, ``--holdout-seed``), ``val`` the next ``--val`` fraction, ``train`` the rest.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsdata.atomic import atomic_write_bytes
from rsdata.corpus.manifest import load_manifest
from rsdata.corpus.samples import key_hash, list_shards, read_shard
from rsdata.errors import InputError

FORMATS = ("rsvqa", "coco", "karpathy", "classes")
SPLITS = ("train", "val", "test")
IMAGE_EXTS = ("jpg", "png")
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


@dataclass(frozen=True)
class SplitRule:
    holdout: float = 0.1
    val: float = 0.1
    seed: int = 0

    def of(self, key: str) -> str:
        h = key_hash(key, self.seed)
        if self.holdout > 0 and h < self.holdout:
            return "test"
        if self.val > 0 and h < self.holdout + self.val:
            return "val"
        return "train"


@dataclass
class Record:
    key: str
    image: bytes
    ext: str
    meta: dict[str, Any]
    split: str


@dataclass
class ExportReport:
    format: str
    out: str
    images: int = 0
    items: int = 0
    splits: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "out": self.out, "images": self.images, "items": self.items,
                "splits": dict(sorted(self.splits.items())), "skipped": dict(sorted(self.skipped.items())),
                "files": self.files}


def records(corpus: str | Path, rule: SplitRule) -> Iterator[Record]:
    """Every sample of a corpus (shards verified against the manifest), with its split."""
    for shard in list_shards([corpus]):
        for entry in read_shard(shard):
            ext = next((e for e in IMAGE_EXTS if e in entry), None)
            if ext is None or "json" not in entry:
                raise InputError(f"sample {entry['__key__']} in {shard.path} has no image or json member")
            meta = json.loads(entry["json"])
            yield Record(entry["__key__"], entry[ext], ext, meta, rule.of(entry["__key__"]))


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _write_json(path: Path, doc: Any, report: ExportReport, out: Path) -> None:
    atomic_write_bytes(path, json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"))
    report.files.append(str(path.relative_to(out)))


def _image(rec: Record, as_tif: bool) -> tuple[bytes, str]:
    if not as_tif:
        return rec.image, rec.ext
    from rsdata.imaging import decode_rgb

    buf = io.BytesIO()
    decode_rgb(rec.image, f"sample {rec.key}").save(buf, format="TIFF")
    return buf.getvalue(), "tif"


def export_rsvqa(corpus: str | Path, out: Path, rule: SplitRule, prefix: str = "rsdata",
                 tif: bool = False) -> ExportReport:
    report = ExportReport("rsvqa", str(out))
    images: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    split_of_image: dict[int, str] = {}
    for rec in records(corpus, rule):
        pairs = (rec.meta.get("vqa") or {}).get("pairs")
        if pairs is None:
            report.skipped["no_vqa"] += 1
            continue
        if not pairs:
            report.skipped["no_pairs"] += 1
            continue
        img_id = len(images)
        data, ext = _image(rec, tif)
        atomic_write_bytes(out / "Images" / f"{img_id}.{ext}", data)
        qids = []
        for p in pairs:
            qid = len(questions)
            qids.append(qid)
            questions.append({"id": qid, "date_added": 0, "img_id": img_id, "people_id": 0,
                              "type": p["type"], "question": p["question"], "answers_ids": [qid],
                              "active": True,
                              "rsdata": {k: p[k] for k in ("family", "answer_type", "template", "tags",
                                                           "objects", "object_ids", "absence")}})
            answers.append({"id": qid, "date_added": 0, "question_id": qid, "people_id": 0,
                            "answer": p["answer"], "active": True})
        images.append({"id": img_id, "questions_ids": qids, "original_name": f"{rec.key}.{ext}",
                       "active": True, "rsdata_key": rec.key, "split": rec.split})
        split_of_image[img_id] = rec.split
        report.images += 1
        report.items += len(pairs)
        report.splits[rec.split] += 1
    for name, doc in (("all_images.json", {"images": images}), ("all_questions.json", {"questions": questions}),
                      ("all_answers.json", {"answers": answers})):
        _write_json(out / name, doc, report, out)
    for split in SPLITS:
        imgs = [i for i in images if i["split"] == split]
        qs = [q for q in questions if split_of_image[q["img_id"]] == split]
        ids = {q["id"] for q in qs}
        ans = [a for a in answers if a["question_id"] in ids]
        _write_json(out / f"{prefix}_split_{split}_images.json", {"images": imgs}, report, out)
        _write_json(out / f"{prefix}_split_{split}_questions.json", {"questions": qs}, report, out)
        _write_json(out / f"{prefix}_split_{split}_answers.json", {"answers": ans}, report, out)
    return report


def read_rsvqa(root: Path, prefix: str, split: str) -> list[tuple[Path, str, str, str]]:
    """The RSVQA layout's reader logic (as RSVQA loaders do it): (image, type, question,
    answer) for every active question of a split's active images."""
    imgs = json.loads((root / f"{prefix}_split_{split}_images.json").read_text())["images"]
    qs = {q["id"]: q for q in json.loads((root / f"{prefix}_split_{split}_questions.json").read_text())["questions"]}
    ans = {a["id"]: a for a in json.loads((root / f"{prefix}_split_{split}_answers.json").read_text())["answers"]}
    out = []
    for img in imgs:
        if not img["active"]:
            continue
        path = next(iter(sorted((root / "Images").glob(f"{img['id']}.*"))), None)
        if path is None:
            raise InputError(f"{root}: image {img['id']} is missing from Images/")
        for qid in img["questions_ids"]:
            q = qs[qid]
            if not q["active"]:
                continue
            out.append((path, q["type"], q["question"], ans[q["answers_ids"][0]]["answer"]))
    return out


def _flat(parts: list[list[list[float]]]) -> list[list[float]]:
    return [[round(float(v), 1) for xy in part for v in xy[:2]] for part in parts if len(part) >= 3]


def export_coco(corpus: str | Path, out: Path, rule: SplitRule) -> ExportReport:
    report = ExportReport("coco", str(out))
    categories: dict[str, dict[str, Any]] = {}
    licenses: dict[str, int] = {}
    docs: dict[str, dict[str, Any]] = {s: {"images": [], "annotations": []} for s in SPLITS}
    refs: list[dict[str, Any]] = []
    ann_id = sent_id = 0
    for rec in records(corpus, rule):
        grounding = rec.meta.get("grounding")
        if grounding is None:
            report.skipped["no_grounding"] += 1
            continue
        if not grounding.get("items"):
            report.skipped["no_expressions"] += 1
            continue
        img_id = report.images
        report.images += 1
        report.splits[rec.split] += 1
        atomic_write_bytes(out / "images" / f"{rec.key}.{rec.ext}", rec.image)
        lic = str((rec.meta.get("source") or {}).get("license", ""))
        lic_id = licenses.setdefault(lic, len(licenses) + 1)
        w, h = grounding["size"]
        doc = docs[rec.split]
        doc["images"].append({"id": img_id, "file_name": f"{rec.key}.{rec.ext}", "width": w, "height": h,
                              "license": lic_id, "rsdata_key": rec.key, "crs": grounding.get("crs")})
        by_referent: dict[tuple[int, ...], dict[str, Any]] = {}
        for item in grounding["items"]:
            ref = item["referent"]
            cat = categories.setdefault(ref["tag"], {"id": len(categories) + 1, "name": ref["phrase"],
                                                     "supercategory": ref.get("category", "other"),
                                                     "tag": ref["tag"]})
            members = tuple(ref["objects"])
            ann = by_referent.get(members)
            if ann is None:
                x0, y0, x1, y1 = ref["box"]
                box_poly = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                pixels = ref.get("pixels")
                seg = _flat(pixels) if ref["geom"] == "polygon" and pixels else box_poly
                area = _poly_area(seg) if ref["geom"] == "polygon" and pixels else (x1 - x0) * (y1 - y0)
                ann = {"id": ann_id, "image_id": img_id, "category_id": cat["id"],
                       "bbox": [x0, y0, round(x1 - x0, 1), round(y1 - y0, 1)], "area": round(area, 1),
                       "iscrowd": 0, "segmentation": seg,
                       "segmentation_kind": "polygon" if seg is not box_poly else "box",
                       "box_crs": ref.get("box_crs"), "geom": ref["geom"],
                       "osm_ids": ref["object_ids"], "expressions": []}
                by_referent[members] = ann
                doc["annotations"].append(ann)
                ann_id += 1
            ann["expressions"].append(item["expression"])
            refs.append({"ref_id": len(refs), "ann_id": ann["id"], "image_id": img_id, "split": rec.split,
                         "category_id": cat["id"], "file_name": f"{rec.key}.{rec.ext}",
                         "sentences": [{"raw": item["expression"], "sent": item["expression"],
                                        "tokens": tokens(item["expression"]), "sent_id": sent_id}],
                         "sent_ids": [sent_id], "kind": item["kind"], "template": item["template"]})
            sent_id += 1
            report.items += 1
    cats = sorted(categories.values(), key=lambda c: c["id"])
    lic_list = [{"id": i, "name": name, "url": ""} for name, i in sorted(licenses.items(), key=lambda kv: kv[1])]
    for split, doc in docs.items():
        full = {"info": {"description": f"rsdata grounding export of {Path(corpus).name}", "version": "1.0"},
                "licenses": lic_list, "images": doc["images"], "annotations": doc["annotations"],
                "categories": cats}
        _write_json(out / "annotations" / f"instances_{split}.json", full, report, out)
    _write_json(out / "refs.json", refs, report, out)
    return report


def _poly_area(seg: list[list[float]]) -> float:
    total = 0.0
    for flat in seg:
        xs, ys = flat[0::2], flat[1::2]
        total += abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2
    return total


def export_karpathy(corpus: str | Path, out: Path, rule: SplitRule) -> ExportReport:
    report = ExportReport("karpathy", str(out))
    name = Path(corpus).resolve().name or "rsdata"
    images: list[dict[str, Any]] = []
    sent_id = 0
    for rec in records(corpus, rule):
        texts: list[str] = []
        for cap in rec.meta.get("captions") or []:
            text = str(cap.get("text", "")).strip() if isinstance(cap, dict) else ""
            if text and text not in texts:
                texts.append(text)
        if not texts:
            report.skipped["no_caption"] += 1
            continue
        img_id = len(images)
        filename = f"{rec.key}.{rec.ext}"
        atomic_write_bytes(out / "images" / filename, rec.image)
        sentences = []
        for text in texts:
            sentences.append({"raw": text, "tokens": tokens(text), "imgid": img_id, "sentid": sent_id})
            sent_id += 1
        images.append({"filename": filename, "filepath": "", "imgid": img_id, "split": rec.split,
                       "sentences": sentences, "sentids": [s["sentid"] for s in sentences],
                       "rsdata_key": rec.key})
        report.images += 1
        report.items += len(sentences)
        report.splits[rec.split] += 1
    _write_json(out / f"dataset_{name}.json", {"images": images, "dataset": name}, report, out)
    return report


def export_classes(corpus: str | Path, out: Path, rule: SplitRule, split: str | None = None) -> ExportReport:
    report = ExportReport("classes", str(out))
    from rsdata.tasks.scene import default_classes

    prompts = {c.folder: c.prompt for c in default_classes().classes}
    names: dict[str, str] = {}
    labels: dict[str, Any] = {}
    for rec in records(corpus, rule):
        if split and rec.split != split:
            continue
        scene = rec.meta.get("scene")
        if scene is None:
            report.skipped["no_scene"] += 1
            continue
        if not scene.get("label"):
            report.skipped["no_label"] += 1
            continue
        label = str(scene["label"])
        folder = label.replace(" ", "_").replace("/", "_")
        names[folder] = str(scene.get("prompt") or prompts.get(folder) or label)
        atomic_write_bytes(out / folder / f"{rec.key}.{rec.ext}", rec.image)
        labels[rec.key] = {"label": label, "labels": scene.get("labels", []), "split": rec.split,
                           "file": f"{folder}/{rec.key}.{rec.ext}"}
        report.images += 1
        report.items += 1
        report.splits[rec.split] += 1
    _write_json(out / "classnames.json", dict(sorted(names.items())), report, out)
    _write_json(out / "labels.json", labels, report, out)
    return report


def export(corpus: str | Path, fmt: str, out: str | Path, rule: SplitRule | None = None,
           tif: bool = False, prefix: str = "rsdata", split: str | None = None) -> ExportReport:
    """Write ``corpus`` in format ``fmt`` under ``out`` (see the module docstring)."""
    load_manifest(corpus)  # a missing or failed corpus fails here, before anything is written
    rule = rule or SplitRule()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "rsvqa":
        report = export_rsvqa(corpus, out, rule, prefix=prefix, tif=tif)
    elif fmt == "coco":
        report = export_coco(corpus, out, rule)
    elif fmt == "karpathy":
        report = export_karpathy(corpus, out, rule)
    elif fmt == "classes":
        report = export_classes(corpus, out, rule, split)
    else:
        raise InputError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if report.images == 0:
        why = ", ".join(f"{k} {v}" for k, v in report.skipped.items()) or "the corpus is empty"
        hint = {"rsvqa": "add a vqa stage", "coco": "add a grounding stage",
                "karpathy": "add a captioning stage", "classes": "add a scene_label stage"}[fmt]
        raise InputError(f"rsdata export --format {fmt}: no sample of {corpus} has what it needs "
                         f"({why}); {hint} to the recipe (see pipelines/vqa.yaml)")
    _write_json(out / "export.json", report.to_json(), report, out)
    return report
