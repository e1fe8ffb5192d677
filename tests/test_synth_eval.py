"""Synthetic samples downstream: ``--synthetic include|exclude|only`` for train / eval / score /
filter on a small corpus holding both kinds, and ``rsdata eval-synth``: the Fréchet distance,
layout adherence (ceiling, chance) and the contact sheet, on constructed data whose answers are
known, and end to end with a tiny pipeline saved in the test."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webdataset as wds

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from rsdata import __version__, schemas  # noqa: E402
from rsdata.cli import main  # noqa: E402
from rsdata.corpus import Corpus  # noqa: E402
from rsdata.corpus.samples import is_synthetic  # noqa: E402
from rsdata.synth import evaluate as E  # noqa: E402
from rsdata.synth.layouts import CLASS_INDEX, N_CLASSES  # noqa: E402
from scoring_helpers import sample_meta  # noqa: E402
from tiny_corpus import samples, tiny_model_config  # noqa: E402

N = 24


# -- a corpus holding real and synthetic samples ------------------------------------------------
def kind_of(i: int) -> str:
    """Every third sample is synthetic (origin synthetic); every sixth + 1 is a synthetic sample
    read again through a corpus source (origin corpus, root synthetic); the rest are real."""
    return "flag" if i % 3 == 0 else ("root" if i % 6 == 1 else "real")


def write_mixed(out_dir: Path, n: int = N, per_shard: int = 8) -> Path:
    entries = samples(n, size=32, seed=1, prefix="mix")
    for i, e in enumerate(entries):
        meta = sample_meta(e["__key__"], e["txt"].decode(), {"s": round(i / n, 4)})
        if kind_of(i) == "flag":
            meta["synthetic"] = True
            meta["origin"] = {"type": "synthetic", "source": "gen"}
        elif kind_of(i) == "root":  # a synthetic sample of a parent corpus
            meta["synthetic"] = True
            meta["origin"] = {"type": "corpus", "root": "synthetic", "parent_key": e["__key__"],
                              "parent": "gen", "parent_manifest_sha256": "0" * 64}
        schemas.validate("sample", meta, "a mixed-corpus sample")
        e["json"] = json.dumps(meta).encode()
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(0, n, per_shard):
        path = shard_dir / f"mix-{s // per_shard:05d}.tar"
        with wds.TarWriter(str(path), encoder=False, mtime=946684800.0) as tw:
            for e in entries[s:s + per_shard]:
                tw.write(e)
        data = path.read_bytes()
        shards.append({"path": f"shards/{path.name}", "nsamples": len(entries[s:s + per_shard]),
                       "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": "rsdata-manifest/1", "name": "mix",
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "rsdata_version": __version__, "recipe": {"generator": "tests/test_synth_eval.py"},
                "recipe_hash": hashlib.sha256(b"mix").hexdigest(), "parent": None,
                "nsamples": n, "shards": shards, "stages": [], "sources": []}
    schemas.validate("manifest", manifest, "the mixed corpus manifest")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir


SYN = {f"mix_{i:05d}" for i in range(N) if kind_of(i) != "real"}
REAL = {f"mix_{i:05d}" for i in range(N)} - SYN


def keys_of(out: Path) -> set[str]:
    return {e.key for e in Corpus(out).entries({"json"})}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("mixed")
    corpus = write_mixed(base / "c")
    cfg = base / "tiny.json"
    cfg.write_text(json.dumps(tiny_model_config("tiny-syn")))
    run = base / "run"
    assert main(["train", "--data", str(corpus), "--out", str(run), "--model", str(cfg), "--steps", "2",
                 "--batch-size", "8", "--workers", "0", "--threads", "1", "--quiet"]) == 0
    return {"base": base, "corpus": corpus, "cfg": cfg, "run": run}


def test_is_synthetic_reads_the_flag_and_the_origin() -> None:
    assert is_synthetic({"synthetic": True})
    assert is_synthetic({"origin": {"type": "synthetic"}})
    assert is_synthetic({"origin": {"type": "corpus", "root": "synthetic"}})
    assert not is_synthetic({"origin": {"type": "corpus", "root": "raster"}})
    assert not is_synthetic({"synthetic": False, "origin": {"type": "raster"}})
    assert not is_synthetic({}) and not is_synthetic(None)
    assert len(SYN) == 12 and len(REAL) == 12


def test_train_leaves_out_what_synthetic_asks(mixed: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--data", str(mixed["corpus"]), "--model", str(mixed["cfg"]), "--steps", "1",
              "--batch-size", "4", "--workers", "0", "--threads", "1", "--quiet"]
    for mode, left in (("exclude", SYN), ("only", REAL)):
        run = tmp_path / mode
        assert main(["train", *common, "--out", str(run), "--synthetic", mode]) == 0
        listed = (run / "keys-left-out.txt").read_text().split("\n")
        assert {k for k in listed if k and not k.startswith("#")} == left
        assert f"--synthetic {mode}: 12 of 24 samples (12 synthetic, 12 real)" in capsys.readouterr().err
    # the default includes them and says so; nothing is left out
    assert main(["train", *common, "--out", str(tmp_path / "inc")]) == 0
    assert "12 of 24 samples are synthetic and are trained on" in capsys.readouterr().err
    assert not (tmp_path / "inc" / "keys-left-out.txt").exists()
    # --exclude-keys is combined with the synthetic exclusion
    extra = tmp_path / "extra.txt"
    extra.write_text("mix_00002\n")
    assert main(["train", *common, "--out", str(tmp_path / "both"), "--synthetic", "exclude",
                 "--exclude-keys", str(extra)]) == 0
    listed = set((tmp_path / "both" / "keys-left-out.txt").read_text().split("\n"))
    assert SYN | {"mix_00002"} <= listed


def test_train_only_on_a_real_corpus_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tiny_corpus import write_corpus

    corpus = write_corpus(tmp_path / "real", n=8)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_model_config("tiny-real")))
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "r"), "--model", str(cfg),
                 "--steps", "1", "--workers", "0", "--synthetic", "only", "--quiet"]) != 0
    assert "nothing left to train on" in capsys.readouterr().err


def test_eval_measures_real_tiles_by_default(mixed: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    seen = {}
    for mode in ("exclude", "only", "include", None):
        args = ["eval", "--baseline", "random", "--data", str(mixed["corpus"]), "--bootstrap", "0",
                "--out", str(tmp_path / str(mode)), "--json"] + (["--synthetic", mode] if mode else [])
        capsys.readouterr()
        assert main(args) == 0
        seen[mode] = json.loads(capsys.readouterr().out.splitlines()[-1])["sets"][0]["n_images"]
    assert seen == {"exclude": 12, "only": 12, "include": 24, None: 12}


def test_filter_keeps_what_synthetic_asks(mixed: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = mixed["corpus"]
    # alone: a real-only copy, the drops counted by reason
    assert main(["filter", str(src), "--out", str(tmp_path / "real"), "--synthetic", "exclude", "--quiet"]) == 0
    assert keys_of(tmp_path / "real") == REAL
    subset = json.loads((tmp_path / "real" / "subset.json").read_text())
    assert subset["dropped_by_reason"] == {"synthetic": 12}
    # with a score: the top fraction is taken among the selected samples only
    assert main(["filter", str(src), "--out", str(tmp_path / "top"), "--synthetic", "only",
                 "--top-fraction", "0.5", "--quiet"]) == 0
    best_syn = sorted(SYN, key=lambda k: -int(k[-5:]))[:6]  # score s grows with the index
    assert keys_of(tmp_path / "top") == set(best_syn)
    subset = json.loads((tmp_path / "top" / "subset.json").read_text())
    assert subset["dropped_by_reason"] == {"below_top_fraction": 6, "real": 12}
    # the sweep counts the selected samples
    capsys.readouterr()
    assert main(["filter", str(src), "--sweep", "0.0", "--synthetic", "exclude"]) == 0
    assert "over 12 samples" in capsys.readouterr().out
    # the default changes nothing
    assert main(["filter", str(src), "--out", str(tmp_path / "all"), "--threshold", "0", "--quiet"]) == 0
    assert keys_of(tmp_path / "all") == SYN | REAL


def test_score_scores_only_what_synthetic_asks(mixed: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "scored"
    assert main(["score", str(mixed["corpus"]), "--out", str(out), "--scorer", "baseline", "--model",
                 str(mixed["run"]), "--synthetic", "only", "--quiet"]) == 0
    assert keys_of(out) == SYN
    for e in Corpus(out).entries({"json"}):
        meta = e.meta()
        assert "baseline" in meta["scores"] and is_synthetic(meta)
    manifest = json.loads((out / "manifest.json").read_text())
    subset = next(s for s in manifest["stages"] if s["name"] == "subset")
    assert subset["dropped"] == {"real": 12}
    assert (out / "synthetic-selection.json").is_file()
    out2 = tmp_path / "all"
    assert main(["score", str(mixed["corpus"]), "--out", str(out2), "--scorer", "baseline", "--model",
                 str(mixed["run"]), "--quiet"]) == 0
    assert keys_of(out2) == SYN | REAL


# -- eval-synth: the numbers ----------------------------------------------------------------------
def test_frechet_distance_is_exact_on_known_cases() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    assert E.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, -2.0, 0.5, 0, 0, 3.0])
    # a shifted copy: only the means differ
    assert E.frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    # a scaled copy: covariance 4S, so Tr(S + 4S - 2 * 2S) = Tr(S)
    assert E.frechet_distance(a, 2 * a) == pytest.approx(np.trace(np.cov(a, rowvar=False)) + 0.0
                                                         + float(a.mean(0) @ a.mean(0)), rel=1e-6)
    b = rng.normal(size=(300, 6))
    assert E.frechet_distance(a, b) == pytest.approx(E.frechet_distance(b, a), rel=1e-6)
    assert E.frechet_distance(a, b) < E.frechet_distance(a, b + 1.0)
    with pytest.raises(ValueError):
        E.frechet_distance(a, rng.normal(size=(10, 5)))


def scenes(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Layouts of forest / water / farmland blocks and a road, and images that follow them (each
    class its colour, plus noise)."""
    rng = np.random.default_rng(seed)
    colours = {CLASS_INDEX["forest"]: (30, 90, 40), CLASS_INDEX["water"]: (30, 60, 150),
               CLASS_INDEX["farmland"]: (200, 180, 100), CLASS_INDEX["road_major"]: (235, 235, 230)}
    lays = np.zeros((n, size, size), np.uint8)
    imgs = np.zeros((n, size, size, 3), np.uint8)
    areas = [CLASS_INDEX["forest"], CLASS_INDEX["water"], CLASS_INDEX["farmland"]]
    for i in range(n):
        cut = int(rng.integers(8, size - 8))
        a, b = rng.choice(areas, 2, replace=False)
        lays[i, :, :cut], lays[i, :, cut:] = a, b
        if rng.random() < 0.5:
            lays[i, int(rng.integers(4, size - 6)):][:3] = CLASS_INDEX["road_major"]
        for c, col in colours.items():
            imgs[i][lays[i] == c] = col
    noisy = imgs.astype(np.float64) + rng.normal(0, 10, imgs.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), lays


def mean_colour_features(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64)
    return np.concatenate([x.mean((1, 2)), x.std((1, 2))], 1)


def test_an_identical_to_real_generator_reaches_the_ceiling_and_the_floor() -> None:
    ref, ref_lay = scenes(40, 0)
    real, real_lay = scenes(40, 1)
    sets = E.EvalSets(ref, ref_lay, real, real_lay, real.copy(), real_lay.copy())
    report, _ = E.evaluate_sets(sets, mean_colour_features, classifier_steps=200)
    adh, fd = report["adherence"], report["frechet_distance"]
    assert adh["generated"] == adh["ceiling_real"]
    assert adh["ceiling_real"]["mean_class_recall"] > 0.9  # colours reveal these layouts
    assert fd["generated_vs_reference"] == fd["real_vs_reference"]
    assert fd["noise_vs_reference"] > 4 * fd["real_vs_reference"] > 0
    # the same scenes scored against shuffled layouts: far below
    assert adh["chance_shuffled_layouts"]["mean_class_recall"] < adh["generated"]["mean_class_recall"] - 0.3
    assert set(adh["generated"]["per_class"]) == {"forest", "water", "farmland", "road_major"}


def test_a_generator_that_ignores_its_layouts_adheres_like_chance() -> None:
    ref, ref_lay = scenes(40, 0)
    real, real_lay = scenes(40, 1)
    other, _ = scenes(40, 2)  # plausible scenes of other layouts
    sets = E.EvalSets(ref, ref_lay, real, real_lay, other, real_lay.copy())
    report, _ = E.evaluate_sets(sets, mean_colour_features, classifier_steps=200)
    adh = report["adherence"]
    gen, ceiling = adh["generated"]["mean_class_recall"], adh["ceiling_real"]["mean_class_recall"]
    assert gen < ceiling - 0.3
    assert abs(gen - adh["chance_shuffled_layouts"]["mean_class_recall"]) < 0.2


def test_adherence_counts_pixels_per_class() -> None:
    lay = np.zeros((1, 4, 4), np.uint8)
    lay[0, :2] = CLASS_INDEX["water"]
    pred = lay.copy()
    pred[0, 0, :] = 0  # 4 of the 8 water pixels missed
    a = E.adherence(pred, lay)
    assert a["per_class"] == {"unmapped": 1.0, "water": 0.5}
    assert a["mean_class_recall"] == 0.75 and a["pixel_accuracy"] == 0.75
    assert a["pixels"] == {"unmapped": 8, "water": 8}
    assert N_CLASSES > CLASS_INDEX["water"]


def test_derangement_moves_every_layout() -> None:
    for n in (2, 3, 10, 57):
        d = E.derangement(n, seed=n)
        assert sorted(d.tolist()) == list(range(n)) and (d != np.arange(n)).all()


# -- eval-synth end to end -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fixtures.scene import write_scene
    from test_synthetic import run, save_layout_model, write

    base = tmp_path_factory.mktemp("evalsynth")
    raster, osm = write_scene(base, size=256, seed=3)
    recipe = {"version": 1, "name": "layouts",
              "source": {"type": "raster", "rasters": [{"id": "scene", "path": str(raster)}],
                         "tile": {"size": 64, "gsd": 2.0}, "partition_size": 8},
              "stages": [{"type": "osm_join", "sources": [{"path": str(osm)}]}, {"type": "layout"}],
              "output": {"max_samples_per_shard": 8}}
    out = base / "layouts"
    assert run(write(base / "r", recipe), out) == 0
    return {"base": base, "layouts": out, "model": save_layout_model(base / "model")}


def test_eval_synth_on_a_model_writes_the_report_and_the_sheet(
        layouts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    cfg = tmp_path / "enc.json"
    cfg.write_text(json.dumps(tiny_model_config("tiny-enc")))
    out = tmp_path / "ev"
    assert main(["eval-synth", str(layouts["model"]), "--real", str(layouts["layouts"]), "--out", str(out),
                 "--n", "6", "--steps", "2", "--encoder", str(cfg), "--json"]) == 0
    text = capsys.readouterr().out
    report = json.loads(text.splitlines()[-1])
    assert report == json.loads((out / "report.json").read_text())
    assert report["n"] == {"reference": 6, "real": 6, "generated": 6, "noise": 6}
    assert report["size"] == 32 and report["seen_in_training"] is False
    assert set(report["frechet_distance"]) == {"generated_vs_reference", "noise_vs_reference",
                                               "real_vs_reference"}
    assert {"ceiling_real", "generated", "chance_shuffled_layouts"} <= set(report["adherence"])
    assert "not comparable with Inception FID" in text and "untrained" in report["encoder"]
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == ((3 * 32 + 8) * 2, 18 + 6 * (32 * 2 + 4))
    # the same seed gives the same numbers
    capsys.readouterr()
    assert main(["eval-synth", str(layouts["model"]), "--real", str(layouts["layouts"]), "--out",
                 str(tmp_path / "ev2"), "--n", "6", "--steps", "2", "--encoder", str(cfg), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert again["frechet_distance"] == report["frechet_distance"]
    assert again["adherence"] == report["adherence"]


def test_eval_synth_on_a_corpus_reads_its_synthetic_samples(
        layouts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_synthetic import run, synth_recipe, write

    recipe = synth_recipe(layouts["model"], corpus=str(layouts["layouts"]), max_samples=4, size=32)
    gen = tmp_path / "gen"
    assert run(write(tmp_path / "r", recipe), gen) == 0
    cfg = tmp_path / "enc.json"
    cfg.write_text(json.dumps(tiny_model_config("tiny-enc2")))
    assert main(["eval-synth", str(gen), "--real", str(layouts["layouts"]), "--n", "4", "--encoder", str(cfg),
                 "--out", str(tmp_path / "ev"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["n"]["generated"] == 4 and "synthetic samples" in report["generated_from"]


def test_eval_synth_bad_inputs_name_the_fix(layouts: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval-synth", str(layouts["model"]), "--out", str(tmp_path / "x")]) == 2
    assert "needs --real CORPUS" in capsys.readouterr().err
    assert main(["eval-synth", str(layouts["layouts"]), "--out", str(tmp_path / "y")]) != 0
    assert "no synthetic samples" in capsys.readouterr().err
    assert main(["eval-synth", str(tmp_path), "--out", str(tmp_path / "z")]) != 0
    assert "neither a model directory" in capsys.readouterr().err
    assert main(["eval-synth", str(layouts["model"]), "--real", str(layouts["layouts"]), "--encoder",
                 "no-such-encoder", "--n", "4", "--steps", "1", "--out", str(tmp_path / "w")]) == 2
    assert "rsdata train --list-models" in capsys.readouterr().err
