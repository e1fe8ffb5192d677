"""Synthetic scenes: layout rasterization, the ``layout`` stage, the ``synthetic`` source with a
tiny layout pipeline and a tiny Stable-Diffusion-style text pipeline (both randomly initialised
and built here: no downloads), seeds, the generation record, ``train-synth`` with exact
resume, kill -9 mid-generation, and the bad inputs that must stop a run with the fix."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from fixtures.scene import corpus_keys, shard_checksums, write_scene  # noqa: E402
from rsdata import schemas  # noqa: E402
from rsdata.cli import main  # noqa: E402
from rsdata.corpus import Corpus  # noqa: E402
from rsdata.errors import InputError, RecipeError  # noqa: E402
from rsdata.plan import build_plan  # noqa: E402
from rsdata.recipe import parse_recipe  # noqa: E402
from rsdata.synth import layouts as L  # noqa: E402

GSD = 4.0
SIZE = 32


# -- helpers ----------------------------------------------------------------------------------
def write(directory: Path, recipe: dict[str, Any], name: str = "recipe.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def run(recipe: Path, out: Path, *extra: str) -> int:
    return main(["run", str(recipe), "--out", str(out), "--quiet", *extra])


def synth_recipe(model: Path, name: str = "syn", **source: Any) -> dict[str, Any]:
    return {"version": 1, "name": name,
            "source": {"type": "synthetic", "model": str(model), "steps": 2, "batch_size": 4,
                       "partition_size": 4, **source},
            "stages": [{"type": "template_captions", "count": 1}],
            "output": {"max_samples_per_shard": 4}}


def plan_of(recipe: dict[str, Any], tmp: Path) -> Any:
    return build_plan(parse_recipe(recipe, tmp), tmp / "plan-out")


def obj(tag: str, category: str, geom: str, parts: list[list[list[float]]], **attrs: str) -> dict[str, Any]:
    return {"tag": tag, "category": category, "geom": geom, "pixels": parts, "attrs": dict(attrs)}


def rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def save_layout_model(path: Path, patch: int = 2, layout_channels: int = L.N_CLASSES,
                      meta: bool = True) -> Path:
    """A tiny randomly initialised LayoutDiffusionPipeline saved as a pipeline directory."""
    from diffusers import DDIMScheduler, UNet2DModel

    from rsdata.synth.pipeline import LayoutDiffusionPipeline

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=SIZE // patch, in_channels=(3 + layout_channels) * patch ** 2,
                       out_channels=3 * patch ** 2, layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    pipe = LayoutDiffusionPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100,
                                                                      clip_sample=False),
                                   patch_size=patch)
    pipe.save_pretrained(path)
    if meta:
        (path / "rsdata_synth.json").write_text(json.dumps({
            "layout": {"version": L.LAYOUT_VERSION, "classes": list(L.CLASSES)},
            "image_size": SIZE, "gsd_m": GSD, "license": "test-only"}))
    return path


def tiny_tokenizer(directory: Path) -> Any:
    """A CLIP BPE tokenizer over single characters (no merges), built from files written here."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,'-")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                         model_max_length=32)


def save_text_model(path: Path) -> Path:
    """A tiny randomly initialised Stable-Diffusion-style pipeline: UNet2DConditionModel +
    AutoencoderKL + CLIPTextModel + CLIPTokenizer, saved with save_pretrained."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(path.parent / f"{path.name}-tok")
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2,
                                        max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), cross_attention_dim=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=32)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A scene (UTM raster + OSM GeoJSON), a corpus of it with layouts, and the two tiny models."""
    base = tmp_path_factory.mktemp("synth")
    raster, osm = write_scene(base, size=256, seed=3)
    recipe = {"version": 1, "name": "layouts",
              "source": {"type": "raster", "rasters": [{"id": "scene", "path": str(raster)}],
                         "tile": {"size": 64, "gsd": 2.0}, "partition_size": 8},
              "stages": [{"type": "osm_join", "sources": [{"path": str(osm)}]},
                         {"type": "layout"}, {"type": "template_captions", "count": 1}],
              "output": {"max_samples_per_shard": 8}}
    layouts = base / "layouts"
    assert run(write(base / "r", recipe), layouts) == 0
    return {"base": base, "osm": osm, "layouts": layouts,
            "layout_model": save_layout_model(base / "layout-model"),
            "text_model": save_text_model(base / "text-model")}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSDATA_CACHE", str(tmp_path_factory.getbasetemp() / "rsdata-cache"))


# -- layouts ----------------------------------------------------------------------------------
def test_layout_rasterization_has_the_known_pixel_counts_per_class() -> None:
    objects = [
        obj("landuse=farmland", "landcover", "polygon", [rect(0, 0, 64, 30)]),      # 1920 px
        obj("building=yes", "building", "polygon", [rect(10, 10, 30, 20)]),         # 200 px, on top
        obj("highway=primary", "road", "line", [[[0, 40], [64, 40]]]),              # 12 m at 1 m/px
        obj("highway=track", "road", "line", [[[50.5, 0], [50.5, 64]]]),            # 3 m, under primary
        obj("natural=water", "water", "polygon", [rect(0, 50, 20, 60)]),            # 200 px
        obj("highway=residential", "road", "line", [[[20, 0], [20, 64]]], tunnel="yes"),  # hidden
        obj("amenity=bench", "amenity", "point", [[[5, 5]]]),                       # points: none
        obj("leisure=nature_reserve", "leisure", "polygon", [rect(0, 0, 64, 64)]),  # never painted
    ]
    layout = L.rasterize(objects, 64, 64, gsd_m=1.0)
    counts = L.class_pixels(layout)
    assert counts["building"] == 200
    assert counts["road_major"] == 12 * 64
    assert counts["track"] == 3 * (64 - 12)            # crossed by the major road, which is on top
    assert counts["farmland"] == 64 * 30 - 200 - 3 * 30
    assert counts["water"] == 200
    assert sum(counts.values()) == 64 * 64
    assert counts["unmapped"] == 64 * 64 - 200 - 768 - 156 - 1630 - 200
    # line widths follow the GSD: at 2 m/px the primary road is 6 px wide
    assert L.class_pixels(L.rasterize(objects[2:3], 64, 64, gsd_m=2.0))["road_major"] == 6 * 64
    # layout.png round trip: a palette PNG of class indices that names its class map
    png = L.encode_png(layout)
    assert np.array_equal(L.decode_png(png), layout)
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "P" and im.text[L.PNG_TEXT_KEY].startswith(L.LAYOUT_VERSION)


def test_a_layout_png_of_another_class_map_is_refused() -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(L.PNG_TEXT_KEY, "someone-else-v9 a,b")
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG", pnginfo=info)
    with pytest.raises(InputError, match="someone-else-v9"):
        L.decode_png(buf.getvalue())


def test_the_layout_stage_writes_layout_png_from_the_objects(work: dict[str, Path]) -> None:
    n = 0
    for entry in Corpus(work["layouts"]).entries():
        meta = entry.meta()
        layout = L.decode_png(entry.members["layout.png"])
        assert layout.shape == (64, 64)
        assert np.array_equal(layout, L.rasterize(meta["osm"]["objects"], 64, 64, meta["geo"]["gsd_m"]))
        assert meta["layout"]["pixels"] == L.class_pixels(layout)
        n += int(layout.any())
    assert n >= 8  # the scene's buildings and roads are painted


# -- the synthetic source ---------------------------------------------------------------------
def test_grid_source_marks_every_sample_and_records_how_it_was_made(work: dict[str, Path], tmp_path: Path) -> None:
    recipe = synth_recipe(work["layout_model"], osm=str(work["osm"]), max_samples=6)
    out = tmp_path / "grid"
    assert run(write(tmp_path, recipe), out) == 0
    entries = list(Corpus(out).entries())
    assert 1 <= len(entries) <= 6
    for e in entries:
        meta = e.meta()
        schemas.validate("sample", meta, e.key)
        assert e.key.startswith("syn_osm_") and meta["synthetic"] is True
        assert meta["origin"] == {"type": "synthetic", "source": "synthetic", "layout": "osm_grid"}
        assert meta["source"]["type"] == "synthetic" and len(meta["source"]["sha256"]) == 64
        assert meta["geo"]["crs"].startswith("EPSG:327") and meta["geo"]["size"] == [SIZE, SIZE]
        rec = meta["synthesis"]
        assert rec["pipeline"] == "LayoutDiffusionPipeline" and rec["conditioning"] == "layout"
        assert rec["model"]["sha256"] == meta["source"]["sha256"]
        assert rec["steps"] == 2 and rec["scheduler"]["class"] == "DDIMScheduler"
        assert rec["layout"]["source"] == "osm_grid" and rec["layout"]["extract"].endswith("osm.geojson")
        assert rec["layout"]["footprint"]["bounds"] == meta["geo"]["bounds"]
        assert isinstance(rec["seed"], int) and rec["prompt"] is None
        layout = L.decode_png(e.members["layout.png"])
        # the OSM statistics are those of the layout: it is painted from the very objects
        assert np.array_equal(layout, L.rasterize(meta["osm"]["objects"], SIZE, SIZE, GSD))
        assert rec["layout"]["pixels"] == L.class_pixels(layout) and layout.any()
        from PIL import Image

        with Image.open(io.BytesIO(e.image())) as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"
        assert e.members["txt"]  # template captions from the layout's statistics
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_reports"]["synthetic"]["layouts"] == "osm_grid"


def test_same_seed_same_bytes_other_seed_other_image(work: dict[str, Path], tmp_path: Path) -> None:
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        recipe = synth_recipe(work["layout_model"], osm=str(work["osm"]), max_samples=4, seed=seed)
        out = tmp_path / name
        assert run(write(tmp_path / f"r{name}", recipe), out) == 0
        outs.append({e.key: e.image() for e in Corpus(out).entries()})
    assert outs[0] == outs[1]
    assert outs[0].keys() == outs[2].keys()
    assert all(outs[0][k] != outs[2][k] for k in outs[0])
    # one image does not depend on its batch: alone or in a batch of 4, the same bytes
    recipe = synth_recipe(work["layout_model"], osm=str(work["osm"]), max_samples=4, batch_size=1)
    assert run(write(tmp_path / "r1", recipe), tmp_path / "d") == 0
    alone = {e.key: e.image() for e in Corpus(tmp_path / "d").entries()}
    assert alone == outs[0]


def test_corpus_layouts_several_per_layout_and_two_sources(work: dict[str, Path], tmp_path: Path) -> None:
    recipe = {"version": 1, "name": "mixed",
              "sources": [{"type": "corpus", "id": "real", "path": str(work["layouts"])},
                          {"type": "synthetic", "id": "gen", "model": str(work["layout_model"]),
                           "corpus": str(work["layouts"]), "steps": 2, "per_layout": 2,
                           "size": SIZE, "max_samples": 6}],
              "stages": [], "output": {"max_samples_per_shard": 8}}
    out = tmp_path / "mixed"
    assert run(write(tmp_path, recipe), out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    real = len(list(Corpus(work["layouts"]).entries()))
    assert manifest["samples_per_source"] == {"real": real, "gen": 6}
    syn = {e.key: e for e in Corpus(out).entries() if e.key.startswith("gen_")}
    assert len(syn) == 6
    parents = {e.key: e.meta() for e in Corpus(work["layouts"]).entries()}
    for key, e in syn.items():
        meta = e.meta()
        assert key.startswith("gen_syn_scene_") and key[-3:] in ("_s0", "_s1")
        rec = meta["synthesis"]["layout"]
        parent = parents[rec["parent_key"]]
        assert rec["source"] == "corpus" and rec["from"] == "layout.png" and rec["resampled_to"] == SIZE
        assert meta["geo"]["bounds"] == parent["geo"]["bounds"]           # the parent's footprint
        assert meta["geo"]["gsd_m"] == pytest.approx(parent["geo"]["gsd_m"] * 2)  # 64 -> 32 px
        assert [t["tag"] for t in meta["osm"]["tags"]] == [t["tag"] for t in parent["osm"]["tags"]]
    s0, s1 = sorted(syn)[:2]
    assert syn[s0].image() != syn[s1].image()  # several scenes per layout: other seeds


def test_text_pipeline_runs_for_real_through_the_source(work: dict[str, Path], tmp_path: Path) -> None:
    recipe = synth_recipe(work["text_model"], osm=str(work["osm"]), conditioning="text", size=SIZE,
                          gsd=GSD, max_samples=3, prompt="an aerial image of {subjects}",
                          guidance_scale=3.0, negative_prompt="blurry")
    out = tmp_path / "text"
    assert run(write(tmp_path, recipe), out) == 0
    entries = list(Corpus(out).entries())
    assert entries
    for e in entries:
        meta = e.meta()
        rec = meta["synthesis"]
        assert rec["pipeline"] == "StableDiffusionPipeline" and rec["model"]["kind"] == "text"
        assert rec["prompt"].startswith("an aerial image of ") and "{" not in rec["prompt"]
        assert rec["guidance_scale"] == 3.0 and rec["negative_prompt"] == "blurry"
        from PIL import Image

        with Image.open(io.BytesIO(e.image())) as im:
            assert im.size == (SIZE, SIZE)
    again = tmp_path / "text2"
    assert run(write(tmp_path / "again", recipe), again) == 0
    assert shard_checksums(out) == shard_checksums(again)


def test_the_default_guidance_of_a_text_pipeline_is_recorded(work: dict[str, Path], tmp_path: Path) -> None:
    recipe = synth_recipe(work["text_model"], corpus=str(work["layouts"]), conditioning="text",
                          size=SIZE, max_samples=1, prompt="{caption}", scheduler="DDPMScheduler")
    out = tmp_path / "t"
    assert run(write(tmp_path, recipe), out) == 0
    (e,) = list(Corpus(out).entries())
    rec = e.meta()["synthesis"]
    parent = {p.key: p.meta() for p in Corpus(work["layouts"]).entries()}[rec["layout"]["parent_key"]]
    assert rec["prompt"] == parent["captions"][0]["text"]
    assert rec["guidance_scale"] == 7.5 and rec["scheduler"]["class"] == "DDPMScheduler"


# -- bad input --------------------------------------------------------------------------------
def test_a_directory_that_is_not_a_diffusers_pipeline_is_refused(work: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "weights"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="not a diffusers pipeline directory.*model_index.json.*train-synth"):
        plan_of(synth_recipe(bad, osm=str(work["osm"])), tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        plan_of(synth_recipe(tmp_path / "nowhere", osm=str(work["osm"])), tmp_path)


def test_layout_channels_that_do_not_match_the_class_map_are_refused(work: dict[str, Path], tmp_path: Path) -> None:
    model = save_layout_model(tmp_path / "five", layout_channels=5, meta=False)
    with pytest.raises(InputError, match=r"5 layout channel.*rsdata-layout-v1 has 12.*train-synth"):
        plan_of(synth_recipe(model, osm=str(work["osm"])), tmp_path)


def test_a_text_only_pipeline_asked_for_layouts_is_refused(work: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="StableDiffusionPipeline.*takes text prompts, not layouts.*"
                                         "conditioning: text"):
        plan_of(synth_recipe(work["text_model"], osm=str(work["osm"]), size=SIZE, gsd=GSD), tmp_path)
    with pytest.raises(InputError, match="takes layouts, not text.*conditioning: layout"):
        plan_of(synth_recipe(work["layout_model"], osm=str(work["osm"]), conditioning="text"), tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_requested_where_there_is_none_is_refused(work: dict[str, Path], tmp_path: Path) -> None:
    recipe = synth_recipe(work["layout_model"], osm=str(work["osm"]), device="cuda")
    with pytest.raises(InputError, match="device: cuda.*no CUDA device.*device: auto"):
        plan_of(recipe, tmp_path)
    from rsdata.sources import create_source

    source = create_source(parse_recipe(recipe, tmp_path).source, "synthetic")
    assert source.resources() == {"num_gpus": 1}  # Ray is asked for one
    cpu = create_source(parse_recipe(synth_recipe(work["layout_model"], osm="x"), tmp_path).source, "s")
    assert cpu.resources() == {}


def test_recipe_mistakes_name_the_fix(work: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="exactly one of corpus"):
        plan_of(synth_recipe(work["layout_model"]), tmp_path)
    with pytest.raises(RecipeError, match=r"\{caption\}"):
        plan_of(synth_recipe(work["layout_model"], osm=str(work["osm"]), prompt="{caption}"), tmp_path)
    with pytest.raises(InputError, match="not a diffusers scheduler"):
        plan_of(synth_recipe(work["layout_model"], osm=str(work["osm"]), scheduler="Nope"), tmp_path)
    # a corpus without layouts says how to make them
    stripped = tmp_path / "stripped"
    recipe = {"version": 1, "name": "strip", "source": {"type": "raster", "rasters": [
        {"id": "scene", "path": str(work["base"] / "scene.tif")}], "tile": {"size": 64, "gsd": 2.0},
        "max_samples": 2}, "stages": [], "output": {}}
    assert run(write(tmp_path / "s", recipe), stripped) == 0
    with pytest.raises(InputError, match="no layout.png member and no osm.objects.*type: layout"):
        plan_of(synth_recipe(work["layout_model"], corpus=str(stripped)), tmp_path)


# -- train-synth ------------------------------------------------------------------------------
TRAIN = ["--size", "32", "--channels", "16,32", "--attention-levels", "0", "--batch-size", "4",
         "--warmup", "2", "--quiet", "--no-preview", "--checkpoint-every", "0"]


def _state(out: Path) -> dict[str, Any]:
    return torch.load(out / ".rsdata-train" / "checkpoint.pt", weights_only=True)


def test_train_synth_resumes_exactly_and_its_model_loads_through_the_source(
        work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train-synth", str(work["layouts"]), "--out", str(whole), "--steps", "4", *TRAIN]) == 0
    assert main(["train-synth", str(work["layouts"]), "--out", str(split), "--steps", "4",
                 "--stop-after", "2", *TRAIN]) == 0
    assert _state(split)["step"] == 2
    assert main(["train-synth", str(work["layouts"]), "--out", str(split), "--steps", "4", *TRAIN]) == 0
    a, b = _state(whole), _state(split)
    assert a["step"] == b["step"] == 4
    for part in ("unet", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    log = [json.loads(line) for line in (split / ".rsdata-train" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    # another model config is refused on resume
    assert main(["train-synth", str(work["layouts"]), "--out", str(split), "--steps", "6",
                 *[("8,16" if t == "16,32" else t) for t in TRAIN]]) == 2
    assert "another model config" in capsys.readouterr().err
    # the saved pipeline is what the synthetic source loads
    meta = json.loads((whole / "rsdata_synth.json").read_text())
    assert meta["image_size"] == 32 and meta["gsd_m"] == 2.0 and meta["layout"]["classes"] == list(L.CLASSES)
    recipe = synth_recipe(whole, corpus=str(work["layouts"]), max_samples=2, size=32)
    assert run(write(tmp_path / "r", recipe), tmp_path / "gen") == 0
    assert len(list(Corpus(tmp_path / "gen").entries())) == 2


def test_train_synth_refuses_a_corpus_without_layouts(work: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    recipe = {"version": 1, "name": "nolayout", "source": {"type": "raster", "rasters": [
        {"id": "scene", "path": str(work["base"] / "scene.tif")}], "tile": {"size": 64, "gsd": 2.0},
        "max_samples": 2}, "stages": [], "output": {}}
    assert run(write(tmp_path, recipe), tmp_path / "c") == 0
    assert main(["train-synth", str(tmp_path / "c"), "--out", str(tmp_path / "m"), "--steps", "1", *TRAIN]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no layout.png and no osm.objects" in err and "type: layout" in err


# -- kill -9 ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_mid_generation_then_rerun_gives_the_same_corpus(work: dict[str, Path], tmp_path: Path) -> None:
    recipe = synth_recipe(work["layout_model"], osm=str(work["osm"]), steps=8, partition_size=1,
                          batch_size=1, drop_empty=False, max_samples=10)
    recipe["output"]["max_samples_per_shard"] = 1
    path = write(tmp_path, recipe)
    env = {**os.environ}

    def cli(out: Path) -> list[str]:
        return [sys.executable, "-m", "rsdata", "run", str(path), "--out", str(out), "--quiet"]

    reference = tmp_path / "reference"
    done = subprocess.run(cli(reference), capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(cli(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    markers = out / ".rsdata" / "partitions"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if markers.exists() and len(list(markers.glob("*.json"))) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    rerun = subprocess.run(cli(out), capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    keys = corpus_keys(out)
    assert len(keys) == len(set(keys)), "duplicated samples after resume"
    assert sorted(keys) == sorted(corpus_keys(reference))
    assert shard_checksums(out) == shard_checksums(reference)


def test_synthetic_settings_declare_exactly_the_schema_fields() -> None:
    from rsdata.settings import field_names
    from rsdata.sources.synthetic import SyntheticSettings

    props = set(schemas.validator("recipe").schema["$defs"]["synthetic_source"]["properties"])
    assert field_names(SyntheticSettings) == props - {"type", "id"}


def test_inspect_counts_and_marks_synthetic_samples(work: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    from rsdata.inspect import SYNTHETIC_BADGE

    recipe = synth_recipe(work["layout_model"], osm=str(work["osm"]), max_samples=3)
    out = tmp_path / "grid"
    assert run(write(tmp_path, recipe), out) == 0
    assert main(["inspect", str(out)]) == 0
    summary = json.loads((out / "inspect" / "summary.json").read_text())
    assert summary["samples"]["synthetic"] == len(list(Corpus(out).entries())) > 0
    with Image.open(out / "inspect" / "contact_sheet.png") as sheet:
        pixels = np.asarray(sheet.convert("RGB")).reshape(-1, 3)
    assert (pixels == np.array(SYNTHETIC_BADGE)).all(axis=1).sum() > 100  # the badge and frame
