"""Evaluation: metrics against hand-computed cases, the three input formats, reports, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from rsdata.cli import main as cli_main
from rsdata.evaluate import (
    EvalDataError,
    EvalSpec,
    evaluate,
    read_class_folders,
    read_karpathy,
    retrieval_metrics,
    retrieval_ranks,
    shard_retrieval_set,
    zero_shot_metrics,
)
from rsdata.evaluate.datasets import class_display_name, read_templates
from rsdata.models import create_model, register_config
from tiny_corpus import tiny_model_config, write_corpus


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- metrics ------------------------------------------------------------------------------------
SIM = np.array([[0.9, 0.1, 0.8, 0.2, 0.3],
                [0.5, 0.4, 0.3, 0.6, 0.1],
                [0.2, 0.9, 0.7, 0.1, 0.6]])
OWNER = [0, 0, 1, 2, 2]  # captions 0,1 -> image 0; 2 -> image 1; 3,4 -> image 2


def test_retrieval_ranks_by_hand() -> None:
    i2t, t2i = retrieval_ranks(SIM, OWNER)
    # image 0: best own caption 0.9, no other caption >= 0.9 -> rank 0
    # image 1: own 0.3, beaten by 0.5, 0.4, 0.6 -> rank 3
    # image 2: best own 0.6 (caption 4), beaten by 0.9, 0.7 -> rank 2
    assert i2t.tolist() == [0, 3, 2]
    # caption 1 (image 0) scores 0.1 / 0.4 / 0.9 -> 2 images ahead; caption 4: own 0.6 is best
    assert t2i.tolist() == [0, 2, 2, 2, 0]


def test_retrieval_metrics_by_hand() -> None:
    m = retrieval_metrics(SIM, OWNER, curve_k=4)
    assert m["i2t"] == pytest.approx({"R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0})
    assert m["t2i"] == pytest.approx({"R@1": 40.0, "R@5": 100.0, "R@10": 100.0})
    assert m["mR"] == pytest.approx((100 / 3 + 40 + 400) / 6)
    assert m["curves"]["i2t"] == pytest.approx([100 / 3, 100 / 3, 200 / 3, 100.0])
    assert m["curves"]["t2i"] == pytest.approx([40.0, 40.0, 100.0, 100.0])
    assert m["i2t_median_rank"] == 3.0 and m["t2i_median_rank"] == 3.0
    assert (m["n_images"], m["n_texts"]) == (3, 5)
    assert m["chance"]["t2i"]["R@1"] == pytest.approx(100 / 3)


def test_ties_count_against_the_model() -> None:
    """A constant model ranks every correct item last: no free recall from ties."""
    m = retrieval_metrics(np.zeros((4, 4)), [0, 1, 2, 3], curve_k=4)
    assert m["i2t"]["R@1"] == 0 and m["t2i"]["R@1"] == 0
    assert m["curves"]["t2i"] == [0.0, 0.0, 0.0, 100.0]


def test_retrieval_input_errors() -> None:
    with pytest.raises(ValueError, match="images without any caption: \\[1\\]"):
        retrieval_ranks(np.zeros((2, 2)), [0, 0])
    with pytest.raises(ValueError, match="at least one image"):
        retrieval_ranks(np.zeros((0, 0)), [])
    with pytest.raises(ValueError, match="outside"):
        retrieval_ranks(np.zeros((2, 2)), [0, 5])


def test_zero_shot_metrics_by_hand() -> None:
    logits = np.array([[2, 1, 0], [0, 1, 2], [1, 1, 0], [0, 0, 5]], dtype=float)
    m = zero_shot_metrics(logits, [0, 1, 1, 2], ["farmland", "forest", "water"])
    assert m["top1"] == 50.0  # image 2 ties its true class with class 0: counted wrong
    assert m["top5"] == 100.0
    assert m["confusion"] == [[1, 0, 0], [1, 0, 1], [0, 0, 1]]
    assert m["per_class"] == {"farmland": 100.0, "forest": 0.0, "water": 100.0}
    assert m["mean_per_class"] == pytest.approx(200 / 3)
    assert m["chance_top1"] == pytest.approx(100 / 3)


# -- input formats ------------------------------------------------------------------------------
def _img(path: Path, color: tuple[int, int, int], size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return path


def _karpathy(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "RSICD_images"
    _img(images / "airport_1.jpg", (200, 200, 200))
    _img(images / "sub" / "beach_3.png", (230, 210, 150))
    _img(images / "farmland_2.tif", (120, 160, 60))
    doc = {"dataset": "rsicd", "images": [
        {"filename": "airport_1.jpg", "imgid": 0, "split": "test",
         "sentences": [{"raw": "many planes are parked near the terminal .", "tokens": ["many"]},
                       {"raw": "an airport with a runway ."}]},
        {"filename": "beach_3.png", "filepath": "sub", "imgid": 1, "split": "test",
         "sentences": [{"raw": "yellow beach next to the sea ."}]},
        {"filename": "farmland_2.tif", "imgid": 2, "split": "train",
         "sentences": [{"raw": "green fields ."}]},
    ]}
    path = tmp_path / "dataset_rsicd.json"
    path.write_text(json.dumps(doc))
    return path, images


def test_read_karpathy_json(tmp_path: Path) -> None:
    path, images = _karpathy(tmp_path)
    test = read_karpathy(path, images, split="test")
    assert [i.id for i in test.images] == ["airport_1.jpg", "beach_3.png"]
    assert test.captions == ["many planes are parked near the terminal .", "an airport with a runway .",
                             "yellow beach next to the sea ."]
    assert test.caption_image == [0, 0, 1]
    assert test.images[1].path == images / "sub" / "beach_3.png"
    assert len(read_karpathy(path, images, split=None).images) == 3
    assert read_karpathy(path, images, split="train").captions == ["green fields ."]


def test_karpathy_bad_inputs(tmp_path: Path) -> None:
    path, images = _karpathy(tmp_path)
    with pytest.raises(EvalDataError, match=r"split 'val' of .* is empty.*Splits in the file: test \(2\), train \(1\)"):
        read_karpathy(path, images, split="val")
    (images / "airport_1.jpg").unlink()
    with pytest.raises(EvalDataError, match="1 image\\(s\\) named in .* are not in .*airport_1.jpg"):
        read_karpathy(path, images)
    (tmp_path / "coco.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(EvalDataError, match="not a Karpathy-style caption file"):
        read_karpathy(tmp_path / "coco.json", images)
    (tmp_path / "nocap.json").write_text(json.dumps({"images": [{"filename": "x.jpg", "split": "test",
                                                                   "sentences": []}]}))
    with pytest.raises(EvalDataError, match="has no sentences\\[\\].raw caption"):
        read_karpathy(tmp_path / "nocap.json", images)


def test_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "UCMerced"
    _img(root / "DenseResidential" / "a.tif", (150, 150, 150))
    _img(root / "DenseResidential" / "b.tif", (140, 140, 140))
    _img(root / "storage_tanks" / "c.png", (220, 220, 220))
    (root / "storage_tanks" / "notes.txt").write_text("not an image")
    s = read_class_folders(root)
    assert s.classes == ["dense residential", "storage tanks"]
    assert s.labels == [0, 0, 1] and len(s.images) == 3
    assert read_class_folders(root, {"storage_tanks": "oil tanks"}).classes[1] == "oil tanks"
    assert class_display_name("mobilehomepark") == "mobilehomepark"
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(EvalDataError, match="is empty"):
        read_class_folders(tmp_path / "empty")
    (tmp_path / "t.txt").write_text("an aerial image of {}.\nno placeholder\n")
    with pytest.raises(EvalDataError, match="needs a '\\{\\}'"):
        read_templates(tmp_path / "t.txt")


def test_shard_set_and_empty_holdout(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c", n=16)
    full = shard_retrieval_set([str(corpus)])
    assert len(full.images) == 16 and len(full.captions) == 32  # txt + the second json caption
    assert len(shard_retrieval_set([str(corpus)], all_captions=False).captions) == 16
    with pytest.raises(EvalDataError, match="is empty: nothing to evaluate.*--holdout"):
        shard_retrieval_set([str(corpus)], holdout=1e-9)


# -- reports and the CLI -------------------------------------------------------------------------
def test_evaluate_writes_json_and_png(tmp_path: Path) -> None:
    register_config(tiny_model_config())
    torch.manual_seed(0)
    model = create_model("tiny-test")
    path, images = _karpathy(tmp_path)
    root = tmp_path / "classes"
    for i, name in enumerate(["Farmland", "Water"]):
        for j in range(3):
            _img(root / name / f"{j}.jpg", (40 + 100 * i, 90, 60 + j))
    spec = EvalSpec(retrieval=[read_karpathy(path, images)],
                    zero_shot=[(read_class_folders(root), read_templates(None))])
    report = evaluate(model, spec, tmp_path / "out", "test")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["sets"][0]["kind"] == "retrieval" and set(saved["sets"][0]["i2t"]) == {"R@1", "R@5", "R@10"}
    assert saved["sets"][1]["kind"] == "zero_shot" and len(saved["sets"][1]["confusion"]) == 2
    assert report["model"] == "tiny-test"
    with Image.open(tmp_path / "out" / "report.png") as png:
        assert png.width >= 640 and png.height > 520 + 150  # a recall panel + a confusion panel


def test_trained_beats_untrained_on_held_out_tiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rsdata train --holdout, then rsdata eval on exactly the held-out keys: trained > untrained."""
    corpus = write_corpus(tmp_path / "c", n=96, per_shard=16)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_model_config("tiny-eval")))
    run = tmp_path / "run"
    assert cli_main(["train", "--data", str(corpus), "--out", str(run), "--model", str(cfg), "--steps", "60",
                     "--batch-size", "16", "--lr", "3e-3", "--workers", "0", "--threads", "1", "--holdout", "0.25",
                     "--quiet"]) == 0
    common = ["--data", str(corpus), "--holdout", "0.25", "--json"]
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", str(run), *common]) == 0
    trained = json.loads(capsys.readouterr().out.splitlines()[-1])["sets"][0]
    assert cli_main(["eval", "--model", str(cfg), "--out", str(tmp_path / "u"), *common]) == 0
    untrained = json.loads(capsys.readouterr().out.splitlines()[-1])["sets"][0]
    assert trained["n_images"] == untrained["n_images"] > 10
    assert trained["mR"] > untrained["mR"] + 15, (trained["mR"], untrained["mR"])
    assert trained["mR"] > trained["chance"]["mR"] + 15
    assert (run / "eval" / "report.json").is_file() and (run / "eval" / "report.png").is_file()


def test_cli_eval_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["eval", "--data", str(tmp_path)]) == 2
    assert "exactly one of --checkpoint RUN" in capsys.readouterr().err
    assert cli_main(["eval", "--model", "rs-cnn-tiny"]) == 2
    assert "nothing to evaluate on" in capsys.readouterr().err
    assert cli_main(["eval", "--model", "rs-cnn-tiny", "--karpathy", "x.json"]) == 2
    assert "--karpathy needs --images" in capsys.readouterr().err
    assert cli_main(["eval", "--checkpoint", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
