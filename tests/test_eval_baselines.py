"""Evaluation that means what it says: bootstrap intervals, the no-learning baselines, the
verbatim share, the image-free caption checker and region hold-outs, on small deterministic data."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from rsdata.cli import main as cli_main
from rsdata.evaluate import (
    EvalSpec,
    HistogramBaseline,
    ImageRef,
    RandomBaseline,
    RetrievalSet,
    auc_ci,
    bootstrap_ci,
    evaluate,
    learning_verdict,
    neighbour_caption_scores,
    paired_difference,
    retrieval_ci,
    roc_auc,
    verbatim_share,
)
from rsdata.evaluate import splits
from rsdata.evaluate.baselines import Tfidf, histogram_features, lbp_riu2, normalise_caption
from rsdata.evaluate.bootstrap import paired_auc_difference, percentile_ci, resample_counts
from tiny_corpus import tiny_model_config, write_corpus


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- bootstrap -------------------------------------------------------------------------------------
def test_resample_counts_are_deterministic_and_keep_groups_together() -> None:
    c = resample_counts(7, n_boot=50, seed=3)
    assert c.shape == (50, 7) and (c.sum(axis=1) == 7).all()
    assert (c == resample_counts(7, n_boot=50, seed=3)).all()
    assert not (c == resample_counts(7, n_boot=50, seed=4)).all()
    g = resample_counts(6, n_boot=40, seed=0, groups=["a", "a", "b", "b", "c", "c"])
    assert (g[:, 0] == g[:, 1]).all() and (g[:, 2] == g[:, 3]).all() and (g[:, 4] == g[:, 5]).all()
    assert (g.sum(axis=1) == 6).all()  # three groups of two drawn three times
    with pytest.raises(ValueError, match="at least one unit"):
        resample_counts(0)
    with pytest.raises(ValueError, match="3 group labels for 4"):
        resample_counts(4, groups=[0, 1, 2])


def test_bootstrap_ci_of_a_mean() -> None:
    assert bootstrap_ci([2.0] * 10) == (2.0, 2.0)
    values = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = bootstrap_ci(values, n_boot=1000, seed=0)
    assert lo < 0.3 < hi and 0.18 < lo and hi < 0.42  # binomial sd ~0.046: about +-0.09
    lo_big, hi_big = bootstrap_ci(np.tile(values, 16), n_boot=1000, seed=0)
    assert hi_big - lo_big < (hi - lo) / 2  # 16x the data: a quarter of the width
    assert percentile_ci(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))
    with pytest.raises(ValueError, match="level"):
        percentile_ci(np.arange(3.0), level=1.0)


OWNER = [0, 0, 1, 2, 2]


def test_retrieval_ci_brackets_the_recall_and_is_exact_when_everything_hits() -> None:
    perfect = retrieval_ci([0, 0, 0], [0, 0, 0, 0, 0], OWNER, n_boot=200)
    assert perfect["mR"] == [100.0, 100.0] and perfect["i2t"]["R@1"] == [100.0, 100.0]
    # image 1 misses at R@1 both ways (rank 3), the others hit: i2t R@1 = 2/3, t2i R@1 = 4/5
    ci = retrieval_ci([0, 3, 0], [0, 0, 3, 0, 0], OWNER, n_boot=500, seed=1)
    assert ci["i2t"]["R@1"][0] <= 100 * 2 / 3 <= ci["i2t"]["R@1"][1]
    assert ci["t2i"]["R@1"][0] <= 80.0 <= ci["t2i"]["R@1"][1]
    assert ci["i2t"]["R@5"] == [100.0, 100.0]  # rank 3 < 5: every resample hits
    assert ci["n_boot"] == 500 and ci["level"] == 0.95
    # the captions of one image are resampled together: t2i R@1 is 0% or 100% for image 1 only
    assert ci["t2i"]["R@1"][0] >= 0.0 and ci["t2i"]["R@1"][1] <= 100.0


def test_paired_difference() -> None:
    same = {"i2t": [0, 3, 2], "t2i": [0, 2, 2, 2, 0]}
    d = paired_difference(same, same, OWNER, n_boot=200)
    assert d["mR_difference"] == 0.0 and d["ci"] == [0.0, 0.0]
    good = {"i2t": [0] * 20, "t2i": [0] * 40}
    bad = {"i2t": [30] * 20, "t2i": [30] * 40}
    owner = [i // 2 for i in range(40)]
    d = paired_difference(good, bad, owner, n_boot=200)
    assert d["mR_difference"] == 100.0 and d["ci"][0] == 100.0 and d["share_of_resamples_above_0"] == 1.0
    with pytest.raises(ValueError, match="different sets"):
        paired_difference(same, {"i2t": [0, 1, 2, 3], "t2i": [0, 0, 0, 0, 0]}, OWNER)


def test_roc_auc_and_its_interval() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert roc_auc([1.0, 1.0], [True, False]) == 0.5  # ties count half
    assert roc_auc([3, 2, 1], [True, False, False]) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 2], [True, True])
    rng = np.random.default_rng(0)
    pos = np.r_[np.ones(40, bool), np.zeros(60, bool)]
    scores = pos + rng.normal(0, 1, 100)
    point = roc_auc(scores, pos)
    lo, hi = auc_ci(scores, pos, n_boot=300)
    assert lo < point < hi and hi - lo < 0.3
    d = paired_auc_difference(scores, scores, pos, n_boot=100)
    assert d["difference"] == 0.0 and d["ci"] == [0.0, 0.0]
    better = paired_auc_difference(pos + rng.normal(0, 0.1, 100), scores, pos, n_boot=300)
    assert better["ci"][0] > 0


# -- verbatim share --------------------------------------------------------------------------------
def test_verbatim_share() -> None:
    assert normalise_caption("  A Dirt  track.  ") == "a dirt track"
    train = ["A dirt track.", "A nature reserve covers most of the image."]
    test = ["a dirt track", "A path.", "A nature reserve covers most of the image!", "A dirt track on the left."]
    v = verbatim_share(test, train, test_image=[0, 0, 1, 2])
    assert v["matched"] == 2 and v["share"] == 0.5 and v["n_test"] == 4 and v["n_train_distinct"] == 2
    assert v["images_any"] == pytest.approx(2 / 3)  # images 0 and 1 have one, image 2 none
    assert verbatim_share(["x"], [])["share"] == 0.0


# -- the histogram baseline ------------------------------------------------------------------------
def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _scene(color: tuple[int, int, int], seed: int, stripes: bool = False, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.empty((size, size, 3), dtype=np.float64)
    arr[:] = color
    arr += rng.normal(0, 6, arr.shape)
    if stripes:
        arr[::6] = 250
    return _png(np.clip(arr, 0, 255))


def test_lbp_by_hand() -> None:
    flat = np.full((5, 5), 7.0)
    assert (lbp_riu2(flat) == 8).all()  # every neighbour >= the centre
    spot = np.zeros((3, 3))
    spot[1, 1] = 9
    assert lbp_riu2(spot).tolist() == [[0]]  # no neighbour as bright
    edge = np.zeros((3, 3))
    edge[:, 2] = 5  # right column brighter: 3 neighbours, one run -> uniform, code 3 ... plus the
    edge[1, 1] = 1  # centre above the dark left: bits set only on the right
    assert lbp_riu2(edge).tolist() == [[3]]
    checker = np.indices((3, 3)).sum(axis=0) % 2 * 5.0  # alternating ring: not uniform
    checker[1, 1] = 2.5
    assert lbp_riu2(checker).tolist() == [[9]]


def test_histogram_features_are_fixed_unit_and_rotation_invariant() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)
    arr[5:15, 20:38] = (200, 30, 30)
    f = histogram_features(_png(arr), size=40)
    assert f.shape == (8 * 4 * 4 + 16 + 10,)
    assert np.linalg.norm(f) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(f, histogram_features(_png(np.rot90(arr).copy()), size=40), atol=1e-6)
    assert np.allclose(f, histogram_features(_png(arr[:, ::-1].copy()), size=40), atol=1e-6)
    other = histogram_features(_scene((30, 120, 40), 1), size=40)
    assert float(f @ other) < 0.9


def _set(name: str, items: list[tuple[bytes, list[str]]]) -> RetrievalSet:
    s = RetrievalSet(name)
    for i, (img, caps) in enumerate(items):
        s.add(ImageRef(f"{name}_{i}", data=img), caps)
    return s


def _toy_sets() -> tuple[RetrievalSet, RetrievalSet]:
    kinds = [((200, 60, 50), False, "red roofs of a town"), ((40, 120, 40), False, "a green forest"),
             ((60, 80, 170), False, "a blue lake"), ((180, 170, 120), True, "striped fields of crops")]
    train = _set("train", [(_scene(c, seed, s), [f"{cap}.", f"an aerial photo of {cap}"])
                           for seed in range(3) for c, s, cap in kinds])
    test = _set("test", [(_scene(c, 100 + i, s), [f"An aerial photo of {cap}."])
                         for i, (c, s, cap) in enumerate(kinds)])
    return train, test


def test_histogram_baseline_transfers_the_captions_of_look_alikes() -> None:
    train, test = _toy_sets()
    hb = HistogramBaseline(k=3, size=48).fit(train)
    sim = hb.similarity(test)
    assert sim.shape == (4, 4)
    assert (sim.argmax(axis=1) == np.arange(4)).all() and (sim.argmax(axis=0) == np.arange(4)).all()
    report = evaluate(hb, EvalSpec(retrieval=[test], n_boot=100), None, "toy")
    s = report["sets"][0]
    assert s["mR"] == 100.0 and s["ci"]["mR"] == [100.0, 100.0]
    assert report["baseline"]["kind"] == "histogram" and report["device"] == "cpu"
    assert hb.neighbours(hb.features[:1]).shape == (1, 3)
    with pytest.raises(ValueError, match="fit the histogram baseline"):
        HistogramBaseline().similarity(test)
    with pytest.raises(ValueError, match="zero-shot needs a dual encoder"):
        evaluate(hb, EvalSpec(retrieval=[test], zero_shot=[(None, [])]), None, "toy")  # type: ignore[list-item]


def test_tfidf_and_random_baseline() -> None:
    t = Tfidf().fit(["a dirt track", "a nature reserve"])
    v = t.transform(["A dirt track.", "a path", "dirt"])
    assert v[0] @ v[0] == pytest.approx(1.0) and not v[1, [t.vocab["dirt"], t.vocab["track"]]].any()
    assert (t.transform(["zebra"]) == 0).all()  # unseen words: a zero vector (ranks tied, counted wrong)
    _, test = _toy_sets()
    r = RandomBaseline(seed=5)
    assert (r.similarity(test) == RandomBaseline(seed=5).similarity(test)).all()
    assert r.similarity(test).shape == (4, 4)


def test_learning_verdict() -> None:
    _, test = _toy_sets()

    class Oracle:
        name = "oracle"

        def similarity(self, data: RetrievalSet) -> np.ndarray:
            return (np.arange(len(data.images))[:, None] == np.asarray(data.caption_image)[None]).astype(float)

        def describe(self) -> dict[str, object]:
            return {"kind": "oracle"}

    big = _set("big", [(img.data, caps) for _ in range(10) for img, caps in  # 40 images, 40 captions
                       zip(test.images, [[c] for c in test.captions])])  # type: ignore[misc]
    spec = EvalSpec(retrieval=[big], n_boot=200)
    oracle = evaluate(Oracle(), spec, None, "o")["sets"][0]
    rand = evaluate(RandomBaseline(), spec, None, "r")["sets"][0]
    v = learning_verdict(oracle, rand, n_boot=200)
    assert v["learns"] and v["paired"]["ci"][0] > 0 and v["model_ci"][0] > v["baseline_ci"][1]
    assert not learning_verdict(rand, rand, n_boot=200)["learns"]
    small = evaluate(RandomBaseline(), EvalSpec(retrieval=[test], n_boot=50), None, "r")["sets"][0]
    with pytest.raises(ValueError, match="different sets"):
        learning_verdict(oracle, small)
    with pytest.raises(ValueError, match="bootstrap intervals"):
        learning_verdict(evaluate(Oracle(), EvalSpec(retrieval=[big], n_boot=0), None, "o")["sets"][0], rand)


# -- the image-free caption checker ----------------------------------------------------------------
def _grid(n: int, step: float = 1.0, size: float = 1.0) -> np.ndarray:
    return np.array([[c * step, r * step, c * step + size, r * step + size] for r in range(n) for c in range(n)],
                    dtype=float) * 1e-3


def test_neighbour_caption_scores_flag_the_odd_caption_out() -> None:
    bounds = _grid(4)  # 4 x 4 tiles, not overlapping
    caps = ["a pine forest" if i % 4 < 2 else "a wide river" for i in range(16)]
    caps[5] = "a wide river"  # on the forest side
    s = neighbour_caption_scores(caps, bounds, k=4)
    assert int(np.argmin(s)) == 5
    assert s[0] > 0.5 and s[3] > 0.5
    with pytest.raises(ValueError, match="3 bounds for 16"):
        neighbour_caption_scores(caps, bounds[:3])


def test_neighbour_caption_scores_disjoint_ignores_overlapping_tiles() -> None:
    # tile 0 and its overlapping copy (tile 1) say "river"; the three clear neighbours say "forest"
    bounds = np.array([[0, 0, 1, 1], [0.5, 0, 1.5, 1], [2, 0, 3, 1], [0, 2, 1, 3], [2, 2, 3, 3]], float) * 1e-3
    caps = ["river water", "river water", "pine forest", "pine forest", "pine forest"]
    near = neighbour_caption_scores(caps, bounds, k=1)
    clear = neighbour_caption_scores(caps, bounds, k=1, disjoint=True)
    assert near[0] == pytest.approx(1.0, abs=1e-5) and clear[0] == pytest.approx(0.0, abs=1e-6)
    ctx = neighbour_caption_scores(caps, bounds, context=["x", "river water, pine forest", "y", "z", "w"], k=1)
    assert 0 < ctx[0] < 1


# -- region hold-outs ------------------------------------------------------------------------------
def _tiles() -> list[splits.Tile]:
    """Photo A: a 6 x 8 grid of unit tiles at a quarter-tile stride; photo B elsewhere."""
    a = [splits.Tile(f"a_{c:05d}_{r:05d}", "a", (c * 0.25, -r * 0.25 - 1, c * 0.25 + 1, -r * 0.25))
         for c in range(6) for r in range(8)]
    b = [splits.Tile(f"b_{i:05d}_00000", "b", (10 + i, 0, 11 + i, 1)) for i in range(3)]
    return a + b


def test_source_holdout() -> None:
    tiles = _tiles()
    s = splits.source_holdout(tiles, ["b"])
    assert len(s.test) == 3 and len(s.train) == 48 and not s.excluded
    assert s.not_for_training() == sorted(t.key for t in tiles if t.source == "b")
    with pytest.raises(splits.SplitError, match="no tiles from \\['c'\\]"):
        splits.source_holdout(tiles, ["c"])
    with pytest.raises(splits.SplitError, match="no training tiles"):
        splits.source_holdout(tiles, ["a", "b"])


def test_block_holdout_shares_no_pixel_and_edge_block() -> None:
    tiles = _tiles()
    block = splits.edge_block(tiles, "a", "south", 0.5)
    a_bounds = [t.bounds for t in tiles if t.source == "a"]
    assert block[1] == min(b[1] for b in a_bounds) and block[3] == pytest.approx((-1 - 1.75 + 0) / 2)
    s = splits.block_holdout(tiles, block, sources=["a"])
    by = {t.key: t for t in tiles}
    assert s.test and s.train and s.excluded
    for k in s.test:
        assert splits._inside(by[k].bounds, block)
        assert all(splits.overlap_share(by[k].bounds, by[j].bounds) == 0 for j in s.train)
    assert {k for k in s.excluded if k.startswith("b")} == {t.key for t in tiles if t.source == "b"}
    assert sorted(s.train + s.test + s.excluded) == sorted(by)
    wide = splits.block_holdout(tiles, block, buffer_m=20_000, sources=["a"])  # ~0.18 degree
    assert len(wide.train) < len(s.train) and wide.test == s.test
    assert splits.grow(block, 0) == block
    with pytest.raises(splits.SplitError, match="side must be"):
        splits.edge_block(tiles, "a", "up", 0.5)
    merged = splits.merge([splits.source_holdout(tiles, ["b"]), s])
    assert set(merged.test) == set(s.test) | {t.key for t in tiles if t.source == "b"}
    assert set(merged.train) == set(s.train)
    assert not set(merged.excluded) & (set(merged.train) | set(merged.test))


def test_thin_keeps_every_second_row_and_column() -> None:
    tiles = [t for t in _tiles() if t.source == "a"]
    kept = splits.thin(tiles, [t.key for t in tiles], max_overlap=0.5)
    cols_rows = {(int(k.split("_")[1]), int(k.split("_")[2])) for k in kept}
    assert cols_rows == {(c, r) for c in range(0, 6, 2) for r in range(0, 8, 2)}
    none_overlap = splits.thin(tiles, [t.key for t in tiles], max_overlap=0.0)
    assert len(none_overlap) == 2 * 2  # every 4th row and column


def test_read_tiles_from_a_corpus(tmp_path: Path) -> None:
    meta = {"geo": {"bounds_wgs84": [20.5, -34.0, 20.51, -33.99]}, "source": {"id": "photo-1"}}
    assert splits.tile_from_meta("k", meta) == splits.Tile("k", "photo-1", (20.5, -34.0, 20.51, -33.99))
    assert splits.tile_from_meta("p_00001_00002", {"geo": {"bounds_wgs84": [0, 0, 1, 1]}}).source == "p"
    corpus = write_corpus(tmp_path / "c", n=4)  # the tiny corpus has no footprints
    with pytest.raises(splits.SplitError, match="no geo.bounds_wgs84"):
        splits.read_tiles([corpus])


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_eval_baselines_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "c", n=32, per_shard=16)
    keys = tmp_path / "test.txt"
    keys.write_text("\n".join(f"tiny_{i:05d}" for i in range(24, 32)) + "\n")
    assert cli_main(["eval", "--baseline", "histogram", "--data", str(corpus), "--keys", str(keys),
                     "--out", str(tmp_path / "h"), "--bootstrap", "100", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.splitlines()[-1])
    s = report["sets"][0]
    assert report["baseline"]["kind"] == "histogram" and report["baseline"]["train_images"] == 24
    assert s["n_images"] == 8 and set(s["ci"]) >= {"i2t", "t2i", "mR"}
    # the tiny corpus repeats 16 caption patterns every 16 tiles: every test caption was in training
    assert s["verbatim"]["share"] == 1.0 and "occur verbatim in training" in out
    assert s["mR"] > s["chance"]["mR"]  # look-alike colours transfer the right captions
    assert (tmp_path / "h" / "report.json").is_file()

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_model_config("tiny-cmp")))
    assert cli_main(["eval", "--model", str(cfg), "--data", str(corpus), "--keys", str(keys), "--compare",
                     "--bootstrap", "100", "--out", str(tmp_path / "m"), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.splitlines()[-1])
    assert set(report["baselines"]) == {"histogram", "random"}
    assert [v["against"] for v in report["verdicts"]] == ["histogram", "random"]
    assert "claim 'the model learns'" in out and "DOES NOT HOLD" in out  # an untrained model learns nothing
    assert cli_main(["eval", "--baseline", "random", "--data", str(corpus), "--keys", str(keys), "--bootstrap", "0",
                     "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    # a model alone: intervals and the verbatim share (captions read without images), no verdicts
    excl = tmp_path / "excl.txt"
    excl.write_text("\n".join(f"tiny_{i:05d}" for i in range(8, 32)) + "\n")
    assert cli_main(["eval", "--model", str(cfg), "--data", str(corpus), "--keys", str(keys), "--bootstrap", "50",
                     "--train-exclude-keys", str(excl), "--out", str(tmp_path / "m2"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    v = report["sets"][0]["verbatim"]
    assert "baselines" not in report and report["sets"][0]["ci"]["n_boot"] == 50
    assert v["share"] == 0.0 and v["n_test"] == 16 and "8 tiles of" in v["train_side"]  # tiles 0-7 only


def test_cli_eval_baseline_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["eval", "--baseline", "random", "--model", "rs-cnn-tiny", "--data", str(tmp_path)]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert cli_main(["eval", "--baseline", "random", "--classes", str(tmp_path)]) == 2
    assert "zero-shot" in capsys.readouterr().err
    assert cli_main(["eval", "--baseline", "histogram", "--compare", "--data", str(tmp_path)]) == 2
    assert "--compare evaluates the baselines beside a model" in capsys.readouterr().err
    corpus = write_corpus(tmp_path / "c", n=8)
    assert cli_main(["eval", "--baseline", "histogram", "--data", str(corpus)]) == 2  # no training side left
    assert "nothing to evaluate" in capsys.readouterr().err
