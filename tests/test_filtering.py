"""Tests of rsdata.filtering: perceptual hashes, the exact near-duplicate index, the kept-one
choice, threshold vs top fraction, dedup and the eval-leakage guard on constructed duplicates,
the two-pass ``rsdata filter`` (subset list, then reshard), the filter stage, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsdata.cli import main
from rsdata.errors import InputError, OutputConflictError
from rsdata.filtering import Corpus, EvalSpec, FilterSettings, Subset, decide, reshard, sweep
from rsdata.filtering.dedup import HashIndex, bit_blocks, choose_kept, cosine_matches, priority_order
from rsdata.filtering.hashing import TRANSFORMS, dihedral_distance, hamming, image_hashes
from rsdata.filtering.leakage import EvalIndex, find_leaks
from rsdata.filtering.fingerprints import FingerprintBuilder
from rsdata.corpus.manifest import load_manifest
from scoring_helpers import encode, scene, write_corpus
from fixtures import rasters as fx
from rsdata.recipe import parse_recipe


def resolved_stage(entry: dict) -> dict:
    """A stage entry as a run hands it to the stage: checked, defaults filled in by the schema."""
    recipe = fx.recipe_dict("unused.tif")
    recipe["stages"] = [entry]
    return parse_recipe(recipe, Path(".")).stages[0]


FLIP = Image.Transpose.FLIP_LEFT_RIGHT
ROT90 = Image.Transpose.ROTATE_90


# --- hashes ---------------------------------------------------------------------------------


def test_hamming_counts_bits() -> None:
    a = np.array([0, 0xFF, 2**64 - 1], dtype=np.uint64)
    assert hamming(a, np.uint64(0)).tolist() == [0, 8, 64]
    assert hamming(np.uint64(0b1010), np.uint64(0b0110)).item() == 2


def test_copies_hash_close_and_distinct_scenes_far() -> None:
    originals = [scene(i) for i in range(30)]
    hashes = [image_hashes(encode(im)) for im in originals]
    for im, h in zip(originals[:6], hashes[:6]):
        for op in Image.Transpose:  # all 7 flips and right-angle rotations
            copy = im.transpose(op)
            dp, dd, _ = dihedral_distance(image_hashes(encode(copy)), h)
            assert dp <= 2 and dd <= 6
        dp, dd, _ = dihedral_distance(image_hashes(encode(im, quality=35)), h)  # recompressed
        assert dp <= 4 and dd <= 8
        dp, dd, _ = dihedral_distance(image_hashes(encode(im, "PNG")), h)
        assert dp <= 4 and dd <= 8
    closest = min(dihedral_distance(hashes[i], hashes[j])[0]
                  for i in range(len(hashes)) for j in range(len(hashes)) if i != j)
    assert closest > 8


def test_variant_k_is_the_hash_of_the_transformed_image() -> None:
    """hashes[k] of an image equals the identity hash of the image under TRANSFORMS[k], and
    the 8 transforms are the 8 distinct elements of the dihedral group."""
    grid = np.arange(6).reshape(2, 3)
    assert len({t(grid).tobytes() + bytes(t(grid).shape) for t in TRANSFORMS}) == 8
    gray = np.asarray(scene(3).convert("L"))
    h = image_hashes(Image.fromarray(gray))
    for k, t in enumerate(TRANSFORMS):
        moved = image_hashes(Image.fromarray(np.ascontiguousarray(t(gray))))
        assert hamming(moved.phash[0], h.phash[k]) <= 1
        assert hamming(moved.dhash[0], h.dhash[k]) <= 2


def test_hash_index_is_exact() -> None:
    """Multi-index search finds exactly the pairs brute force finds."""
    rng = np.random.default_rng(0)
    n = 300
    p = rng.integers(0, 2**63, size=(n, 8), dtype=np.uint64) | (rng.integers(0, 2, size=(n, 8), dtype=np.uint64) << np.uint64(63))
    d = rng.integers(0, 2**63, size=(n, 8), dtype=np.uint64)
    for i in range(0, 120, 2):  # plant pairs at distances 0..9 under some variant
        k = int(rng.integers(0, 8))
        bits = rng.choice(64, size=int(rng.integers(0, 10)), replace=False)
        flip = np.uint64(sum(1 << int(b) for b in bits))
        p[i + 1, 0] = p[i, k] ^ flip
        d[i + 1, 0] = d[i, k]
    m = HashIndex(p, d, max_phash=6, max_dhash=3).query(p[:, 0], d[:, 0], exclude_self=True)
    dp = hamming(p[:, 0][:, None, None], p[None]).astype(int)
    dd = hamming(d[:, 0][:, None, None], d[None]).astype(int)
    ok = ((dp <= 6) & (dd <= 3)).any(-1)
    np.fill_diagonal(ok, False)
    expected = set(zip(*np.nonzero(ok)))
    assert set(zip(m.query.tolist(), m.target.tolist())) == expected
    assert len(expected) >= 30  # the planted pairs within distance 6
    assert len(m) == len(expected)  # each pair once


def test_bit_blocks_cover_64_bits() -> None:
    for n in (1, 5, 7, 64):
        blocks = bit_blocks(n)
        assert len(blocks) == n and sum(w for _, w in blocks) == 64 and blocks[0][0] == 0


def test_cosine_matches_blockwise() -> None:
    rng = np.random.default_rng(1)
    e = rng.normal(size=(50, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    e[7] = e[3]
    qi, ti, cos = cosine_matches(e, e, 0.999, exclude_self=True, block=16)
    assert sorted(zip(qi.tolist(), ti.tolist())) == [(3, 7), (7, 3)]
    assert np.allclose(cos, 1.0, atol=1e-5)


def test_choose_kept_is_greedy_and_deterministic() -> None:
    keys = ["a", "b", "c", "d"]
    # a~b, b~c (a and c not alike), d alone
    pairs = [(np.array([0, 1]), np.array([1, 2]), "near_duplicate")]
    by_key = choose_kept(4, priority_order(keys), pairs)
    assert by_key.kept.tolist() == [True, False, True, True]  # c stays: it is not like a
    assert by_key.reason[1] == "near_duplicate" and by_key.duplicate_of[1] == 0
    scores = np.array([0.1, 0.9, 0.2, 0.5])  # b is best: it stays, a and c go
    by_score = choose_kept(4, priority_order(keys, scores), pairs)
    assert by_score.kept.tolist() == [False, True, False, True]
    tied = priority_order(["b", "a", "c"], np.array([0.5, 0.5, 0.7]))
    assert tied.tolist() == [2, 1, 0]  # score first, then the smaller key


# --- a constructed corpus with duplicates ------------------------------------------------------


def build_dup_corpus(root: Path) -> tuple[Path, dict[str, str]]:
    """12 distinct scenes plus copies: exact, recompressed, flipped, rotated. Scores decide
    which of a pair stays. Returns (corpus dir, {copy key: the key it copies})."""
    items = []
    for i in range(12):
        items.append((f"s{i:02d}", encode(scene(i)), f"scene {i}", {"m": round(0.1 + 0.05 * i, 3)}))
    copies = {
        "x_exact": ("s00", encode(scene(0)), 0.01),
        "x_recomp": ("s01", encode(scene(1), quality=40), 0.02),
        "x_flip": ("s02", encode(scene(2).transpose(FLIP)), 0.03),
        "x_rot": ("s03", encode(scene(3).transpose(ROT90)), 0.99),  # better than s03: s03 goes
    }
    for key, (_, data, score) in copies.items():
        items.append((key, data, "a copy", {"m": score}))
    return write_corpus(root / "corpus", items, max_samples_per_shard=5), {k: v[0] for k, v in copies.items()}


def test_dedup_drops_each_copy_once_and_keeps_the_best(tmp_path: Path) -> None:
    src, copies = build_dup_corpus(tmp_path)
    corpus = Corpus(src)
    subset, report = decide(corpus, FilterSettings(dedup=True))
    assert report is None
    assert subset.dropped["x_exact"] == {"reason": "exact_duplicate", "duplicate_of": "s00", "score": 0.01}
    assert subset.dropped["x_recomp"]["reason"] == "near_duplicate"
    assert subset.dropped["x_recomp"]["duplicate_of"] == "s01"
    assert subset.dropped["x_flip"]["reason"] == "near_duplicate"
    assert subset.dropped["s03"]["reason"] == "near_duplicate"  # the rotated copy scored higher
    assert subset.dropped["s03"]["duplicate_of"] == "x_rot"
    assert set(subset.dropped) == {"x_exact", "x_recomp", "x_flip", "s03"}
    assert subset.counts() == {"exact_duplicate": 1, "near_duplicate": 3}

    out = tmp_path / "dedup"
    manifest = reshard(corpus, subset, out)
    assert manifest["nsamples"] == 12 and manifest["parent"]["path"] == "../corpus/manifest.json"
    assert manifest["stages"][-2] == {"name": "subset", "in": 16, "out": 12,
                                      "dropped": {"exact_duplicate": 1, "near_duplicate": 3}}
    assert manifest["parent"]["manifest_sha256"] == corpus.manifest_sha256()
    assert [e.key for e in Corpus(out).entries()] == [k for k in subset.keys if k not in subset.dropped]
    assert Subset.load(out / "subset.json").kept == subset.kept
    assert main(["inspect", str(out)]) == 0
    again, _ = decide(corpus, FilterSettings(dedup=True))  # deterministic
    assert again.to_json() == subset.to_json()


def test_threshold_and_top_fraction(tmp_path: Path) -> None:
    src, _ = build_dup_corpus(tmp_path)
    corpus = Corpus(src)
    scores = {e.key: e.meta()["scores"]["m"] for e in corpus.entries({"json"})}
    sub_t, _ = decide(corpus, FilterSettings(threshold=0.4))
    assert set(sub_t.kept) == {k for k, v in scores.items() if v >= 0.4}
    assert set(sub_t.counts()) == {"below_threshold"}
    sub_f, _ = decide(corpus, FilterSettings(top_fraction=0.25))  # round(0.25 * 16) = 4
    best = sorted(scores, key=lambda k: (-scores[k], k))[:4]
    assert sub_f.kept == [k for k in sub_f.keys if k in best]
    assert sub_f.counts() == {"below_top_fraction": 12}
    # a sweep reads only the stored scores and agrees with the threshold filter
    name, rows = sweep(corpus, None, [0.0, 0.4, 0.7, 2.0])
    assert name == "m"
    assert [r["kept"] for r in rows] == [16, len(sub_t.kept), sum(v >= 0.7 for v in scores.values()), 0]
    # dedup first, then the fraction of what is left: 12 distinct -> 3 kept
    both, _ = decide(corpus, FilterSettings(top_fraction=0.25, dedup=True))
    assert len(both.kept) == 3
    assert both.counts() == {"below_top_fraction": 9, "exact_duplicate": 1, "near_duplicate": 3}


def test_ties_in_top_fraction_are_broken_by_key(tmp_path: Path) -> None:
    items = [(k, encode(scene(i)), "x", {"m": 0.5}) for i, k in enumerate(["d", "b", "c", "a"])]
    src = write_corpus(tmp_path / "c", items)
    subset, _ = decide(Corpus(src), FilterSettings(top_fraction=0.5))
    assert sorted(subset.kept) == ["a", "b"]


# --- eval leakage -------------------------------------------------------------------------------


def make_eval_folder(root: Path) -> Path:
    """An eval folder: a flipped copy of s05, a recompressed PNG copy of s06, unrelated scenes."""
    root.mkdir(parents=True)
    (root / "sub").mkdir()
    scene(5).transpose(FLIP).save(root / "a.jpg", quality=85)
    scene(6).save(root / "sub" / "b.png")
    for i in range(100, 104):
        scene(i).save(root / f"other_{i}.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_leakage_guard_with_a_folder(tmp_path: Path) -> None:
    src, _ = build_dup_corpus(tmp_path)
    ev = make_eval_folder(tmp_path / "eval")
    subset, report = decide(Corpus(src), FilterSettings(leakage=[EvalSpec(str(ev))]))
    assert set(subset.dropped) == {"s05", "s06"}
    assert subset.dropped["s05"]["reason"] == "eval_leakage"
    assert subset.dropped["s05"]["eval_image"] == "a.jpg"
    assert subset.dropped["s06"]["eval_image"] == "sub/b.png"
    assert report is not None and report["leaked_samples"] == 2
    assert report["eval_sets"][0]["n_images"] == 6 and report["eval_sets"][0]["kind"] == "folder"
    assert {m["key"]: m["kind"] for m in report["matches"]} == {"s05": "near", "s06": "near"}
    out = tmp_path / "clean"
    manifest = reshard(Corpus(src), subset, out, leakage_report=report)
    assert manifest["stages"][-2]["dropped"] == {"eval_leakage": 2}
    assert json.loads((out / "leakage_report.json").read_text())["leaked_samples"] == 2


def test_leakage_guard_with_karpathy_json_and_splits(tmp_path: Path) -> None:
    src, _ = build_dup_corpus(tmp_path)
    images = tmp_path / "rsicd" / "RSICD_images"
    images.mkdir(parents=True)
    scene(7).transpose(ROT90).save(images / "airport_1.jpg")
    scene(8).save(images / "beach_1.jpg")
    scene(200).save(images / "bridge_1.jpg")
    data = {"dataset": "rsicd", "images": [
        {"filename": "airport_1.jpg", "split": "test", "sentences": [{"raw": "an airport"}]},
        {"filename": "beach_1.jpg", "split": "train", "sentences": [{"raw": "a beach"}]},
        {"filename": "bridge_1.jpg", "split": "val", "sentences": [{"raw": "a bridge"}]}]}
    js = tmp_path / "rsicd" / "dataset_rsicd.json"
    js.write_text(json.dumps(data))
    all_splits, _ = decide(Corpus(src), FilterSettings(leakage=[EvalSpec(str(js), str(images))]))
    assert set(all_splits.dropped) == {"s07", "s08"}
    test_only, report = decide(Corpus(src), FilterSettings(leakage=[EvalSpec(str(js), str(images), ("test", "val"))]))
    assert set(test_only.dropped) == {"s07"}
    assert report["eval_sets"][0]["kind"] == "karpathy" and report["eval_sets"][0]["n_images"] == 2
    assert report["eval_sets"][0]["images"] == str(images) and report["eval_sets"][0]["splits"] == ["test", "val"]
    # one-line CLI option
    out = tmp_path / "cli"
    assert main(["filter", str(src), "--out", str(out), "--leakage", str(js), "--leakage-images", str(images),
                 "--leakage-splits", "test", "--quiet"]) == 0
    assert load_manifest(out)["stages"][-2]["dropped"] == {"eval_leakage": 1}


def test_leakage_guard_with_a_corpus_and_exact_bytes(tmp_path: Path) -> None:
    src, _ = build_dup_corpus(tmp_path)
    ev = write_corpus(tmp_path / "evalcorpus", [("e1", encode(scene(9)), "x", None),
                                                 ("e2", encode(scene(300)), "y", None)])
    subset, report = decide(Corpus(src), FilterSettings(leakage=[EvalSpec(str(ev))]))
    assert set(subset.dropped) == {"s09"}
    assert report["matches"] == [{"key": "s09", "eval_set": str(ev), "eval_image": "e1", "kind": "exact",
                                  "phash_distance": 0, "dhash_distance": 0}]


def test_find_leaks_prefers_exact_then_nearest() -> None:
    b = FingerprintBuilder()
    data = encode(scene(1))
    b.add("q", data)
    index = EvalIndex(
        fingerprints=_fp([("e_near", encode(scene(1), quality=50)), ("e_exact", data)]),
        set_of=[0, 0], sets=[{"path": "ev"}])
    leaks = find_leaks(b.build(), index, 6, 10)
    assert leaks[0].kind == "exact" and index.fingerprints.ids[leaks[0].eval_index] == "e_exact"


def _fp(items: list[tuple[str, bytes]]):  # type: ignore[no-untyped-def]
    b = FingerprintBuilder()
    for k, d in items:
        b.add(k, d)
    return b.build()


# --- semantic near duplicates (with a scorer) -----------------------------------------------


def test_semantic_dedup_with_a_scorer(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from scoring_helpers import build_tiny_clip

    from rsdata.scoring import create_scorer

    clip = build_tiny_clip(tmp_path / "clip")
    items = [(f"s{i}", encode(scene(i)), "x", {"m": 0.1 * i}) for i in range(5)]
    corpus = Corpus(write_corpus(tmp_path / "c", items))
    scorer = create_scorer("hf_clip", str(clip), device="cpu")
    # cosine >= -1 holds for every pair: everything duplicates the best-scored sample
    subset, _ = decide(corpus, FilterSettings(dedup=True, semantic_threshold=-1.0), scorer=scorer)
    assert subset.kept == ["s4"]
    assert all(d["reason"] == "semantic_duplicate" and d["duplicate_of"] == "s4" for d in subset.dropped.values())
    assert subset.settings["scorer"]["kind"] == "hf_clip"
    # at 1.0 only identical embeddings would match: nothing goes
    none, _ = decide(corpus, FilterSettings(dedup=True, semantic_threshold=1.0), scorer=scorer)
    assert none.dropped == {}
    with pytest.raises(InputError, match="need image embeddings"):
        decide(corpus, FilterSettings(dedup=True, semantic_threshold=0.9))


# --- two passes through the CLI ------------------------------------------------------------------


def test_subset_only_then_from_subset_equals_one_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, _ = build_dup_corpus(tmp_path)
    assert main(["filter", str(src), "--out", str(tmp_path / "one"), "--threshold", "0.3", "--dedup",
                 "--quiet"]) == 0
    assert main(["filter", str(src), "--out", str(tmp_path / "plan"), "--threshold", "0.3", "--dedup",
                 "--subset-only", "--quiet"]) == 0
    assert not (tmp_path / "plan" / "manifest.json").exists()
    assert main(["filter", str(src), "--out", str(tmp_path / "two"), "--from-subset",
                 str(tmp_path / "plan" / "subset.json"), "--quiet"]) == 0
    one, two = load_manifest(tmp_path / "one"), load_manifest(tmp_path / "two")
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]
    assert one["stages"][-1] == two["stages"][-1]
    capsys.readouterr()
    assert main(["filter", str(src), "--sweep", "0.2,0.5"]) == 0
    assert "scores.m" in capsys.readouterr().out


def test_bad_inputs_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, _ = build_dup_corpus(tmp_path)
    corpus = Corpus(src)
    cases = [
        (["--threshold", "0.5", "--score", "clip"], "have no score 'clip'"),
        ([], "nothing to filter"),
        (["--leakage", str(tmp_path / "nowhere")], "does not exist"),
        (["--semantic-threshold", "0.9", "--dedup"], "need image embeddings"),
        (["--scorer", "hf_clip", "--dedup"], "go together"),
        (["--from-subset", "x.json", "--dedup"], "applies a subset list as it was written"),
    ]
    for extra, message in cases:
        assert main(["filter", str(src), "--out", str(tmp_path / "o"), "--quiet", *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    empty = tmp_path / "empty_eval"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no images"):
        decide(corpus, FilterSettings(leakage=[EvalSpec(str(empty))]))
    js = tmp_path / "k.json"
    js.write_text(json.dumps({"images": [{"filename": "missing.jpg", "split": "test"}]}))
    with pytest.raises(InputError, match="--leakage-images"):
        decide(corpus, FilterSettings(leakage=[EvalSpec(str(js))]))
    js.write_text(json.dumps({"annotations": []}))
    with pytest.raises(InputError, match="not a Karpathy-style"):
        decide(corpus, FilterSettings(leakage=[EvalSpec(str(js))]))
    with pytest.raises(InputError, match="not both"):
        decide(corpus, FilterSettings(threshold=0.1, top_fraction=0.5))
    with pytest.raises(InputError, match="keeps none"):
        sub, _ = decide(corpus, FilterSettings(threshold=5.0))
        reshard(corpus, sub, tmp_path / "none")
    # the output may not be the input, nor an existing corpus unless --overwrite
    with pytest.raises(OutputConflictError, match="never rewrites"):
        reshard(corpus, decide(corpus, FilterSettings(threshold=0.3))[0], src)
    sub, _ = decide(corpus, FilterSettings(threshold=0.3))
    first = reshard(corpus, sub, tmp_path / "v2")
    assert reshard(corpus, sub, tmp_path / "v2")["shards"] == first["shards"]  # a rerun resumes
    other_sub, _ = decide(corpus, FilterSettings(threshold=0.2))
    with pytest.raises(OutputConflictError, match="--overwrite"):
        reshard(corpus, other_sub, tmp_path / "v2")
    reshard(corpus, other_sub, tmp_path / "v2", overwrite=True)
    # a subset list of another corpus does not apply
    other, _ = build_dup_corpus(tmp_path / "other")
    with pytest.raises(InputError, match="another corpus"):
        reshard(Corpus(tmp_path / "v2"), sub, tmp_path / "v3")
    assert Corpus(other).nsamples == 16
    # several scores and none chosen
    two = write_corpus(tmp_path / "two", [("a", encode(scene(1)), "x", {"p": 0.1, "q": 0.2})])
    with pytest.raises(InputError, match="several scores"):
        decide(Corpus(two), FilterSettings(threshold=0.1))
    with pytest.raises(InputError, match="no score that every sample carries"):
        decide(Corpus(write_corpus(tmp_path / "unscored", [("a", encode(scene(1)), "x", None)])),
               FilterSettings(threshold=0.1))


# --- the filter stage in a run -----------------------------------------------------------------


def test_filter_stage_guards_leakage_in_a_run(raster_files: dict, osm_geojson: Path, tmp_path: Path) -> None:
    recipe = fx.recipe_dict(raster_files["utm_rgb"], osm=osm_geojson, captions=True,
                            output={"dir": str(tmp_path / "first")})
    assert main(["run", str(fx.write_recipe(tmp_path, recipe)), "--quiet"]) == 0
    entries = list(Corpus(tmp_path / "first").entries())
    ev = tmp_path / "eval"
    ev.mkdir()
    leaked = [entries[0].key, entries[3].key]
    Image.open(__import__("io").BytesIO(entries[0].image())).transpose(FLIP).save(ev / "one.png")
    (ev / "two.jpg").write_bytes(entries[3].image())
    recipe["output"]["dir"] = str(tmp_path / "second")
    recipe["stages"].append({"type": "filter", "leakage": [{"path": "eval"}]})
    assert main(["run", str(fx.write_recipe(tmp_path, recipe, "second.yaml")), "--quiet"]) == 0
    manifest = load_manifest(tmp_path / "second")
    stage = next(s for s in manifest["stages"] if s["name"] == "filter")
    assert stage["dropped"] == {"eval_leakage": 2}
    assert stage["counters"] == {"leak_exact": 1, "leak_near": 1}
    kept = {e.key for e in Corpus(tmp_path / "second").entries({"json"})}
    assert kept == {e.key for e in entries} - set(leaked)
    assert list((tmp_path / "second" / ".rsdata").glob("leakage-*.npz"))  # fingerprints cached


def test_filter_stage_config_errors() -> None:
    from rsdata.filtering.stage import FilterStage

    with pytest.raises(InputError, match="needs 'score'"):
        FilterStage(resolved_stage({"type": "filter", "threshold": 0.2}))
    with pytest.raises(InputError, match="give a 'threshold'"):
        FilterStage(resolved_stage({"type": "filter"}))
