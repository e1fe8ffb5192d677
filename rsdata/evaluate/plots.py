"""The evaluation figure, drawn with Pillow (no matplotlib): one panel per evaluation set.

Retrieval sets get recall-at-K curves (image -> text and text -> image, with the chance level
dashed); zero-shot sets get a row-normalised confusion matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from PIL import Image, ImageDraw, ImageFont

Font = Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]
PANEL_W, PANEL_H = 640, 520
COLORS = {"i2t": (31, 119, 180), "t2i": (255, 127, 14), "chance": (150, 150, 150)}


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _text_w(draw: ImageDraw.ImageDraw, text: str, font: Font) -> float:
    return draw.textlength(text, font=font)


def _dashed(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], color: tuple[int, int, int]) -> None:
    for i, (a, b) in enumerate(zip(pts, pts[1:])):
        if i % 2 == 0:
            draw.line([a, b], fill=color, width=2)


def recall_panel(result: dict[str, Any], title: str) -> Image.Image:
    img = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    d = ImageDraw.Draw(img)
    f, fs = _font(16), _font(13)
    left, top, right, bottom = 70, 50, PANEL_W - 20, PANEL_H - 60
    d.text((left, 12), f"{title}: recall@K (mR {result['mR']:.1f})", fill="black", font=f)
    ks = result["curves"]["k"]
    kmax = max(ks)

    def xy(k: float, r: float) -> tuple[float, float]:
        return left + (k - 1) / max(kmax - 1, 1) * (right - left), bottom - r / 100 * (bottom - top)

    for r in range(0, 101, 20):
        y = xy(1, r)[1]
        d.line([(left, y), (right, y)], fill=(230, 230, 230))
        d.text((left - 8 - _text_w(d, str(r), fs), y - 7), str(r), fill="black", font=fs)
    for k in sorted({1, 5, 10, *range(0, kmax + 1, 10)} - {0}):
        x = xy(k, 0)[0]
        d.line([(x, top), (x, bottom)], fill=(240, 240, 240))
        d.text((x - _text_w(d, str(k), fs) / 2, bottom + 6), str(k), fill="black", font=fs)
    d.rectangle([left, top, right, bottom], outline="black")
    d.text(((left + right) / 2 - 10, bottom + 26), "K", fill="black", font=f)
    d.text((8, top - 30), "recall %", fill="black", font=fs)
    n_images, n_texts = result["n_images"], result["n_texts"]
    chance_t2i = [xy(k, min(k, n_images) / n_images * 100) for k in ks]
    _dashed(d, chance_t2i, COLORS["chance"])
    for name in ("i2t", "t2i"):
        pts = [xy(k, r) for k, r in zip(ks, result["curves"][name])]
        d.line(pts, fill=COLORS[name], width=3)
    legend = [("image -> text", COLORS["i2t"]), ("text -> image", COLORS["t2i"]),
              ("chance (text -> image)", COLORS["chance"])]
    for i, (label, color) in enumerate(legend):
        y = top + 12 + i * 20
        d.line([(right - 210, y + 7), (right - 180, y + 7)], fill=color, width=3)
        d.text((right - 172, y), label, fill="black", font=fs)
    d.text((left, PANEL_H - 22), f"{n_images} images, {n_texts} captions", fill=(90, 90, 90), font=fs)
    return img


def confusion_panel(result: dict[str, Any], title: str) -> Image.Image:
    classes: list[str] = result["classes"]
    matrix: list[list[int]] = result["confusion"]
    n = len(classes)
    fs = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max(_text_w(probe, f"{i} {c[:28]}", fs) for i, c in enumerate(classes))) + 12
    cell = max(12, min(40, (PANEL_H - 90) // max(n, 1)))
    width = max(PANEL_W, label_w + n * cell + 40)
    height = 80 + n * cell + 30
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    head = f"{title}: zero-shot top-1 {result['top1']:.1f}% (chance {result['chance_top1']:.1f}%)"
    d.text((10, 12), head,
           fill="black", font=_font(16))
    x0, y0 = label_w, 70
    for i, row in enumerate(matrix):
        total = max(sum(row), 1)
        d.text((6, y0 + i * cell + cell / 2 - 7), f"{i} {classes[i][:28]}", fill="black", font=fs)
        for j, v in enumerate(row):
            share = v / total
            shade = int(255 * (1 - share))
            color = (shade, shade, 255) if i == j else (255, shade, shade)
            d.rectangle([x0 + j * cell, y0 + i * cell, x0 + (j + 1) * cell - 1, y0 + (i + 1) * cell - 1],
                        fill=color if v else (250, 250, 250))
    for j in range(n):
        if cell >= 16 or j % 2 == 0:
            d.text((x0 + j * cell + 2, y0 - 16), str(j), fill="black", font=fs)
    d.text((x0, y0 + n * cell + 8), "rows: true class, columns: predicted (share of the row)",
           fill=(90, 90, 90), font=fs)
    return img


def draw_report(sets: list[dict[str, Any]], path: Path) -> Path:
    """Stack one panel per evaluation set vertically into ``path`` (PNG)."""
    panels = []
    for s in sets:
        if s["kind"] == "retrieval":
            panels.append(recall_panel(s, s["name"]))
        else:
            panels.append(confusion_panel(s, s["name"]))
    width = max(p.width for p in panels)
    sheet = Image.new("RGB", (width, sum(p.height for p in panels)), "white")
    y = 0
    for p in panels:
        sheet.paste(p, (0, y))
        y += p.height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
