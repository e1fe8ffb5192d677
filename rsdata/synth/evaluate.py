"""``rsdata eval-synth``: how close generated scenes are to real ones, and whether they follow
their layouts.

Sets (all ``size`` x ``size`` crops at the model's GSD; real tiles are split by key into two
disjoint halves, A and B, so no tile is on both sides of a comparison):

- **reference**: real crops of the A tiles.
- **real (B)**: real crops of the B tiles, with their layouts.
- **generated**: scenes generated from the layouts of the B crops (a model directory), or the
  synthetic samples of a corpus with their ``layout.png`` (a corpus).
- **noise**: iid Gaussian pixels with the reference's per-channel mean and spread.

Numbers:

- **Fréchet distance** (FID-style) between the reference and each of generated, noise and real
  (B) (the floor: what two real sets of this size differ by), on the features of rsdata's own
  image encoder (a baseline dual encoder's image tower: a trained ``rsdata train`` run, or an
  untrained config with a fixed seed, i.e. random convolutional features). It is *not*
  comparable with Inception FID values from the literature, only between rows of one report.
- **Layout adherence**: a per-pixel classifier (colour and local texture features -> layout
  class, multinomial logistic regression in numpy, classes weighted equally) is fitted on the
  reference crops and their layouts, then applied to the real (B) crops (the ceiling: how well
  pixels reveal the layout at all), to the generated scenes (against the layouts they were made
  from), and to the generated scenes against a shuffled assignment of layouts (chance). The
  figure is the per-class recall (share of a class's layout pixels predicted as that class),
  averaged over the classes present; per-class values and pixel accuracy are reported too.
- **Contact sheet**: rows of layout | generated | nearest reference crop (cosine of the
  encoder's features).

The report says whether the real tiles were among the model's training data (its
``rsdata_synth.json`` records the corpus manifest it was trained on): with tiles it has seen,
the numbers measure fit, not generalisation; pass ``--keys`` / ``--exclude-keys`` to choose
held-out tiles.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rsdata.errors import InputError, UsageError
from rsdata.synth.layouts import CLASSES, N_CLASSES, colorize

FORMAT = "rsdata-eval-synth-v1"
Features = Callable[[np.ndarray], np.ndarray]


# -- the Fréchet distance -----------------------------------------------------------------------
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples):
    ``|mu_a - mu_b|^2 + Tr(Sa + Sb - 2 (Sa^1/2 Sb Sa^1/2)^1/2)``, with symmetric square roots
    (eigendecompositions), so it is exact for symmetric positive semi-definite covariances and
    0 for a set against itself."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Fréchet distance needs at least 2 samples per set")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(sa)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = np.linalg.eigvalsh(root @ sb @ root)
    value = float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(mid, 0, None)).sum())
    return max(value, 0.0)


def noise_like(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """iid Gaussian pixels with the per-channel mean and spread of ``images`` (N, H, W, 3)."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(flat.mean(0), flat.std(0), images.shape), 0, 255).round().astype(np.uint8)


# -- the encoder --------------------------------------------------------------------------------
def encoder_features(encoder: str | None, seed: int = 0, batch: int = 64) -> tuple[Features, str]:
    """Feature function of rsdata's image encoder: ``encoder`` is an ``rsdata train`` run or
    checkpoint, or a model config name (untrained, initialised with ``seed``); None: the untrained
    ``rs-cnn-tiny``. Features are the image tower's outputs before normalisation."""
    import torch
    from PIL import Image

    from rsdata.models import create_model, load_checkpoint

    name = encoder or "rs-cnn-tiny"
    if Path(name).is_dir() or (Path(name).is_file() and Path(name).suffix != ".json"):
        model = load_checkpoint(name, device="cpu")
        what = f"rsdata train checkpoint {name}"
    else:
        try:
            torch.manual_seed(seed)
            model = create_model(name, pretrained=False).eval()
        except Exception as exc:  # noqa: BLE001 - an unknown name or a broken config
            raise UsageError(f"--encoder {name!r} is neither an existing rsdata train run / checkpoint nor "
                             f"a model config name ({exc}); see `rsdata train --list-models`") from None
        what = f"untrained {name} (seed {seed}): random convolutional features"

    def features(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = torch.stack([model.image_transform(Image.fromarray(im)) for im in images[i:i + batch]])
                out.append(model.visual(x.to(model.device)).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    return features, what


# -- layout adherence ---------------------------------------------------------------------------
def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (edge-padded) of (N, H, W, C), by summed-area tables."""
    k = 2 * r + 1
    p = np.pad(x, ((0, 0), (r + 1, r), (r + 1, r), (0, 0)), mode="edge").astype(np.float64)
    s = p.cumsum(1).cumsum(2)
    out = s[:, k:, k:] - s[:, :-k, k:] - s[:, k:, :-k] + s[:, :-k, :-k]
    return out / (k * k)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W, 11) per-pixel features: RGB, the 3x3 and 9x9 RGB means,
    and the local spread of brightness in 3x3 and 9x9 windows (texture)."""
    x = images.astype(np.float64) / 255.0
    gray = x.mean(-1, keepdims=True)
    feats = [x, _box(x, 1), _box(x, 4)]
    for r in (1, 4):
        m = _box(gray, r)
        feats.append(np.sqrt(np.clip(_box(gray ** 2, r) - m ** 2, 0, None)))
    return np.concatenate(feats, -1)


@dataclass
class PixelClassifier:
    """Multinomial logistic regression from :func:`pixel_features` to layout classes, fitted with
    full-batch gradient descent (Adam) on a class-balanced sample of pixels."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (F + 1, N_CLASSES)
    classes: np.ndarray  # the classes seen while fitting (others are never predicted)

    @classmethod
    def fit(cls, images: np.ndarray, layouts: np.ndarray, per_class: int = 4000, steps: int = 300,
            lr: float = 0.1, l2: float = 1e-4, seed: int = 0) -> "PixelClassifier":
        feats = pixel_features(images).reshape(-1, 11)
        labels = layouts.reshape(-1).astype(np.int64)
        rng = np.random.default_rng(seed)
        picked = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            picked.append(rng.choice(idx, min(per_class, idx.size), replace=False))
        sel = np.concatenate(picked)
        x, y = feats[sel], labels[sel]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        xb = np.concatenate([(x - mean) / scale, np.ones((len(x), 1))], 1)
        present = np.unique(y)
        # equal weight per class: each sampled pixel counts 1 / (pixels of its class)
        counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
        sw = 1.0 / counts[y]
        sw /= sw.sum()
        onehot = np.eye(N_CLASSES)[y]
        mask = np.full(N_CLASSES, -1e9)
        mask[present] = 0.0
        w = np.zeros((xb.shape[1], N_CLASSES))
        m1, m2 = np.zeros_like(w), np.zeros_like(w)
        for t in range(1, steps + 1):
            logits = xb @ w + mask
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            grad = xb.T @ ((p - onehot) * sw[:, None]) + l2 * w
            m1 = 0.9 * m1 + 0.1 * grad
            m2 = 0.999 * m2 + 0.001 * grad ** 2
            w -= lr * (m1 / (1 - 0.9 ** t)) / (np.sqrt(m2 / (1 - 0.999 ** t)) + 1e-8)
        return cls(mean, scale, w, present)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, H, W) predicted class maps."""
        f = pixel_features(images)
        xb = np.concatenate([(f - self.mean) / self.scale, np.ones(f.shape[:-1] + (1,))], -1)
        logits = xb @ self.weights
        mask = np.full(N_CLASSES, -np.inf)
        mask[self.classes] = 0.0
        return np.argmax(logits + mask, -1).astype(np.uint8)


def adherence(predicted: np.ndarray, layouts: np.ndarray, classes: Sequence[int] | None = None,
              min_pixels: int = 1) -> dict[str, Any]:
    """Per-class recall of layout pixels (predicted == layout), its mean over the classes present
    (and in ``classes`` when given), and the overall pixel accuracy."""
    pred, lay = predicted.reshape(-1), layouts.reshape(-1)
    per: dict[str, float] = {}
    pixels: dict[str, int] = {}
    for c in range(N_CLASSES):
        if classes is not None and c not in classes:
            continue
        here = lay == c
        n = int(here.sum())
        if n >= min_pixels:
            per[CLASSES[c]] = round(float((pred[here] == c).mean()), 4)
            pixels[CLASSES[c]] = n
    mean = round(float(np.mean(list(per.values()))), 4) if per else None
    return {"mean_class_recall": mean, "pixel_accuracy": round(float((pred == lay).mean()), 4),
            "per_class": per, "pixels": pixels}


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of range(n) that moves every index (n >= 2): the shuffled layouts."""
    if n < 2:
        raise ValueError("shuffling layouts needs at least 2 of them")
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, np.int64)
    out[perm] = np.roll(perm, -1)  # one cycle through all indices: nothing stays in place
    return out


# -- the report ---------------------------------------------------------------------------------
@dataclass
class EvalSets:
    """What is compared (uint8 images (N, S, S, 3), class maps (N, S, S))."""

    reference: np.ndarray
    reference_layouts: np.ndarray
    real: np.ndarray
    real_layouts: np.ndarray
    generated: np.ndarray
    generated_layouts: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def evaluate_sets(sets: EvalSets, features: Features, seed: int = 0,
                  classifier_steps: int = 300) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The numbers of the report, and the feature arrays (for the contact sheet)."""
    for name in ("reference", "real", "generated"):
        imgs, lays = getattr(sets, name), getattr(sets, f"{name}_layouts")
        if imgs.shape[:3] != lays.shape or imgs.ndim != 4 or len(imgs) < 2:
            raise InputError(f"eval-synth: the {name} set needs at least 2 images with layouts of the same "
                             f"size (got images {imgs.shape}, layouts {lays.shape})")
    noise = noise_like(sets.reference, seed)
    feats = {"reference": features(sets.reference), "real": features(sets.real),
             "generated": features(sets.generated), "noise": features(noise)}
    fd = {"generated_vs_reference": round(frechet_distance(feats["generated"], feats["reference"]), 4),
          "noise_vs_reference": round(frechet_distance(feats["noise"], feats["reference"]), 4),
          "real_vs_reference": round(frechet_distance(feats["real"], feats["reference"]), 4)}
    clf = PixelClassifier.fit(sets.reference, sets.reference_layouts, steps=classifier_steps, seed=seed)
    classes = [int(c) for c in clf.classes]
    shuffled = sets.generated_layouts[derangement(len(sets.generated_layouts), seed)]
    pred_gen = clf.predict(sets.generated)
    adh = {"ceiling_real": adherence(clf.predict(sets.real), sets.real_layouts, classes),
           "generated": adherence(pred_gen, sets.generated_layouts, classes),
           "chance_shuffled_layouts": adherence(pred_gen, shuffled, classes),
           "classifier": {"kind": "logistic regression on per-pixel colour and texture features",
                          "fitted_on": "reference crops", "classes": [CLASSES[c] for c in classes]}}
    report = {"format": FORMAT, "n": {k: int(len(v)) for k, v in feats.items()},
              "size": int(sets.reference.shape[1]), "feature_dim": int(feats["reference"].shape[1]),
              "frechet_distance": fd, "adherence": adh, **sets.info}
    return report, feats


def contact_sheet(sets: EvalSets, feats: dict[str, np.ndarray], path: Path, rows: int = 8,
                  scale: int = 2) -> Path:
    """layout | generated | nearest reference crop (cosine of encoder features), ``rows`` rows
    (the most mapped layouts first), with a header; written atomically as PNG."""
    from PIL import Image, ImageDraw

    from rsdata.atomic import atomic_write_bytes

    g = feats["generated"] / (np.linalg.norm(feats["generated"], axis=1, keepdims=True) + 1e-12)
    r = feats["reference"] / (np.linalg.norm(feats["reference"], axis=1, keepdims=True) + 1e-12)
    nearest = np.argmax(g @ r.T, 1)
    order = np.argsort([-(lay > 0).mean() for lay in sets.generated_layouts], kind="stable")[:rows]
    s = sets.generated.shape[1]
    gap, head = 4, 18
    sheet = Image.new("RGB", ((3 * s + 2 * gap) * scale, head + len(order) * (s * scale + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(("layout", "generated", "nearest real")):
        draw.text((j * (s + gap) * scale + 2, 3), title, fill="black")
    for i, k in enumerate(order):
        tiles = [colorize(sets.generated_layouts[k]), sets.generated[k], sets.reference[nearest[k]]]
        for j, t in enumerate(tiles):
            im = Image.fromarray(np.ascontiguousarray(t)).resize((s * scale, s * scale), Image.Resampling.NEAREST)
            sheet.paste(im, (j * (s + gap) * scale, head + i * (s * scale + gap)))
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def summary_lines(report: dict[str, Any]) -> list[str]:
    fd, adh = report["frechet_distance"], report["adherence"]
    n = report["n"]
    lines = [f"eval-synth: {report.get('generated_from', 'generated scenes')} vs real tiles "
             f"({report['size']} px; n: reference {n['reference']}, real {n['real']}, generated "
             f"{n['generated']})",
             f"  encoder: {report.get('encoder', '?')} ({report['feature_dim']}-d features)",
             "  Fréchet distance to the reference real crops (FID-style on rsdata's encoder; not "
             "comparable with Inception FID):",
             f"    real (other tiles, the floor) {fd['real_vs_reference']:10.4f}",
             f"    generated                     {fd['generated_vs_reference']:10.4f}",
             f"    noise                         {fd['noise_vs_reference']:10.4f}",
             "  layout adherence (mean per-class recall of a pixel classifier fitted on real crops):"]
    for label, key in (("real (ceiling)", "ceiling_real"), ("generated", "generated"),
                       ("generated vs shuffled (chance)", "chance_shuffled_layouts")):
        a = adh[key]
        lines.append(f"    {label:30s} {a['mean_class_recall']!s:>7}  (pixel accuracy {a['pixel_accuracy']})")
    classes = list(adh["generated"]["per_class"])
    if classes:
        lines.append("    per class (ceiling / generated / chance): " + ", ".join(
            f"{c} {adh['ceiling_real']['per_class'].get(c, '-')}/{adh['generated']['per_class'][c]}/"
            f"{adh['chance_shuffled_layouts']['per_class'].get(c, '-')}" for c in classes))
    if report.get("seen_in_training"):
        lines.append("  NOTE: the real tiles were in the model's training data: these numbers measure "
                     "fit, not generalisation (choose held-out tiles with --keys / --exclude-keys)")
    return lines


# -- reading the sets ---------------------------------------------------------------------------
@dataclass
class Tile:
    key: str
    image: np.ndarray
    layout: np.ndarray


def read_tiles(corpus_dir: Path, gsd: float | None, size: int, synthetic: bool,
               keep: Callable[[str], bool] | None = None) -> tuple[list[Tile], float]:
    """The real (or synthetic) tiles of a corpus with their layouts, resampled to ``gsd``."""
    from rsdata.corpus.reader import Corpus
    from rsdata.corpus.samples import is_synthetic
    from rsdata.synth.training import _resample, tile_with_layout

    tiles: list[Tile] = []
    target = gsd
    for entry in Corpus(corpus_dir).entries():
        meta = entry.meta()
        if is_synthetic(meta) != synthetic or (keep is not None and not keep(entry.key)):
            continue
        image, layout = tile_with_layout(entry, meta, corpus_dir)
        tile_gsd = float((meta.get("geo") or {}).get("gsd_m") or 0) or None
        if target is None:
            target = tile_gsd or 1.0
        image, layout = _resample(image, layout, target / tile_gsd if tile_gsd else 1.0)
        if min(layout.shape) >= size:
            tiles.append(Tile(entry.key, image, layout))
    return tiles, float(target or 1.0)


def crops(tiles: Sequence[Tile], size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` crops (images, layouts), spread evenly over the tiles (round robin), at seeded
    positions; no flips (the model sees layouts the way they are)."""
    if not tiles:
        raise InputError("no tiles to crop")
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, size, size, 3), np.uint8)
    lays = np.empty((n, size, size), np.uint8)
    for i in range(n):
        t = tiles[i % len(tiles)]
        y = int(rng.integers(t.layout.shape[0] - size + 1))
        x = int(rng.integers(t.layout.shape[1] - size + 1))
        imgs[i], lays[i] = t.image[y:y + size, x:x + size], t.layout[y:y + size, x:x + size]
    return imgs, lays


def generate(model_dir: Path, layouts: np.ndarray, steps: int, batch: int, seed: int,
             device: str = "cpu") -> np.ndarray:
    """Scenes from a LayoutDiffusionPipeline directory, one seeded generator per image."""
    import torch

    from rsdata.synth.pipeline import LayoutDiffusionPipeline

    pipe = LayoutDiffusionPipeline.from_pretrained(model_dir, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i in range(0, len(layouts), batch):
        gens = [torch.Generator().manual_seed(seed + j) for j in range(i, min(i + batch, len(layouts)))]
        out.extend(pipe(layouts[i:i + batch], num_inference_steps=steps, generator=gens).images)
    return np.stack(out)


def build_sets(target: Path, real: Path | None, n: int, steps: int, batch: int, seed: int,
               keep: Callable[[str], bool] | None = None, device: str = "cpu") -> EvalSets:
    """The sets for ``rsdata eval-synth TARGET`` (a model directory or a corpus)."""
    from rsdata.corpus.reader import Corpus
    from rsdata.synth.modeldir import read_model_dir

    is_model = (target / "model_index.json").is_file()
    info: dict[str, Any] = {}
    if is_model:
        model = read_model_dir(target)
        if model.kind != "layout":
            raise UsageError(f"eval-synth generates with rsdata's layout pipeline only; {target} is a "
                             f"{model.class_name} ({model.kind}). Generate a corpus with it (source: "
                             "{type: synthetic, ...}) and run eval-synth on that corpus with --real")
        size = int(model.meta.get("image_size") or 64)
        gsd = model.meta.get("gsd_m")
        trained_on = (model.meta.get("trained_on") or {}).get("manifest_sha256")
        if real is None:
            raise UsageError("eval-synth MODEL needs --real CORPUS: real tiles with layouts to compare with "
                             "(e.g. out/synth-layouts)")
        info["seen_in_training"] = bool(trained_on) and trained_on == Corpus(real).manifest_sha256() \
            and keep is None
        info["generated_from"] = f"model {target} ({steps} DDIM steps)"
        real_tiles, gsd_used = read_tiles(real, gsd, size, synthetic=False, keep=keep)
        gen_tiles: list[Tile] = []
    else:
        if not (target / "manifest.json").is_file():
            raise InputError(f"{target} is neither a model directory (model_index.json) nor a corpus "
                             "(manifest.json)")
        probe, _ = read_tiles(target, None, 1, synthetic=True)
        if not probe:
            raise InputError(f"corpus {target} holds no synthetic samples to evaluate")
        size = min(min(t.layout.shape) for t in probe)
        gen_tiles = probe
        real_tiles, gsd_used = read_tiles(real or target, None, size, synthetic=False, keep=keep)
        info["generated_from"] = f"the {len(gen_tiles)} synthetic samples of {target}"
        info["seen_in_training"] = None
    if len(real_tiles) < 4:
        raise InputError(f"eval-synth needs at least 4 real tiles with layouts, found {len(real_tiles)}")
    real_tiles.sort(key=lambda t: t.key)
    half_a, half_b = real_tiles[0::2], real_tiles[1::2]
    ref, ref_lay = crops(half_a, size, n, seed)
    real_b, real_b_lay = crops(half_b, size, n, seed + 1)
    if is_model:
        t0 = time.perf_counter()
        gen = generate(target, real_b_lay, steps, batch, seed + 1000, device)
        info["generation_seconds"] = round(time.perf_counter() - t0, 1)
        gen_lay = real_b_lay
    else:
        gen, gen_lay = crops(gen_tiles, size, min(n, max(len(gen_tiles), 2)), seed + 2)
    info.update({"gsd_m": round(gsd_used, 6), "real_tiles": {"reference": len(half_a), "real": len(half_b)},
                 "real_corpus": str(real or target), "target": str(target), "seed": seed})
    return EvalSets(ref, ref_lay, real_b, real_b_lay, gen, gen_lay, info)


def run_eval(target: Path, out: Path, real: Path | None = None, n: int = 128, steps: int = 25,
             batch: int = 8, seed: int = 0, encoder: str | None = None,
             keep: Callable[[str], bool] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Build the sets, measure, write OUT/report.json and OUT/contact_sheet.png."""
    from rsdata.atomic import atomic_write_bytes

    sets = build_sets(target, real, n, steps, batch, seed, keep, device)
    features, what = encoder_features(encoder, seed)
    sets.info["encoder"] = what
    report, feats = evaluate_sets(sets, features, seed)
    out.mkdir(parents=True, exist_ok=True)
    report["contact_sheet"] = str(contact_sheet(sets, feats, out / "contact_sheet.png"))
    atomic_write_bytes(out / "report.json", (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    return report
