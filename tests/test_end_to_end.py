"""The demo recipe on the bundled real data, end to end, checked as a user would."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import rasterio
from rasterio.io import MemoryFile

from caption_check import caption_problems
from rsdata import schemas
from rsdata.cli import main
from rsdata.corpus.manifest import load_manifest, shard_paths
from rsdata.osm.vocabulary import Vocabulary

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "pipelines" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["run", str(DEMO), "--out", str(out), "--quiet"]) == 0
    return out


def read_entries(out: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of a corpus, by key, read with tarfile (no extraction)."""
    entries: dict[str, dict[str, bytes]] = {}
    for path in shard_paths(out):
        with tarfile.open(path) as tar:
            for member in tar:
                key, ext = member.name.split(".", 1)
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert ext not in entries.setdefault(key, {}), f"duplicate member {member.name}"
                entries[key][ext] = data
    return entries


def all_vocabulary_phrases() -> set[str]:
    vocab = Vocabulary.default()
    phrases = set()
    for _key, _value, phrase in vocab.entries():
        phrases.update({phrase.singular, phrase.plural})
    return phrases


def test_manifest_is_valid_and_checksums_match(demo_out: Path) -> None:
    manifest = load_manifest(demo_out)
    assert manifest["name"] == "demo"
    assert len(manifest["recipe_hash"]) == 64
    assert manifest["shards"], "the demo must write shards"
    for shard in manifest["shards"]:
        data = (demo_out / shard["path"]).read_bytes()
        assert len(data) == shard["bytes"]
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert shard["nsamples"] <= manifest["recipe"]["output"]["max_samples_per_shard"]
    entries = read_entries(demo_out)
    assert len(entries) == manifest["nsamples"] == sum(s["nsamples"] for s in manifest["shards"])
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["tile"]["out"] == stages["osm_join"]["in"]
    assert stages["osm_join"]["out"] + sum(stages["osm_join"]["dropped"].values()) == stages["osm_join"]["in"]
    assert stages["write"]["out"] == manifest["nsamples"]
    licenses = {s["license"] for s in manifest["sources"]}
    assert {"GPL-2.0-only", "ODbL-1.0"} <= licenses


def test_every_sample_is_schema_valid_and_captions_are_supported(demo_out: Path) -> None:
    phrases = all_vocabulary_phrases()
    entries = read_entries(demo_out)
    checked = 0
    for key, members in entries.items():
        assert "." not in key
        assert {"jpg", "txt", "json", "geotiff"} <= set(members)
        meta = json.loads(members["json"])
        schemas.validate("sample", meta, key)
        assert meta["key"] == key
        assert members["txt"].decode() == meta["captions"][0]["text"]
        assert meta["source"]["license"] == "GPL-2.0-only"
        assert abs(meta["geo"]["gsd_m"] - 2.5) < 0.05
        # the demo drops tiles without visible features
        assert any(t["visible"] for t in meta["osm"]["tags"])
        for cap in meta["captions"]:
            assert cap["kind"] == "template" and cap["template"]
            problems = caption_problems(cap["text"], meta["osm"], phrases, meta=meta, provenance=cap)
            assert not problems, f"{key}: {cap['text']!r}: {problems}"
            checked += 1
    assert checked >= 2 * len(entries)


def test_geotiff_chip_round_trips(demo_out: Path) -> None:
    members = next(iter(read_entries(demo_out).values()))
    meta = json.loads(members["json"])
    with MemoryFile(members["geotiff"]) as mem, mem.open() as chip:
        assert chip.count == 4 and chip.dtypes[0] == "uint8"
        assert chip.crs.to_epsg() == 4326
        assert (chip.width, chip.height) == (256, 256)
        assert list(chip.transform)[:6] == pytest.approx(meta["geo"]["transform"])
    with rasterio.open(ROOT / "data/swellendam/image/3420B_2010_328_RGB_LATLNG.tif") as src:
        b = src.bounds
    west, south, east, north = meta["geo"]["bounds_wgs84"]
    if meta["source"]["id"] == "swellendam-3420b":
        assert b.left <= west < east <= b.right and b.bottom <= south < north <= b.top


def test_shards_load_with_webdataset(demo_out: Path) -> None:
    import webdataset as wds

    manifest = load_manifest(demo_out)
    urls = [str(p) for p in shard_paths(demo_out, manifest)]
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
        assert sample["jpg"].size == (256, 256)
        assert isinstance(sample["json"], dict)
        assert sample["txt"] == sample["json"]["captions"][0]["text"]
        n += 1
    assert n == manifest["nsamples"]


def test_shards_load_with_hf_datasets(demo_out: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    from datasets import load_dataset

    manifest = load_manifest(demo_out)
    files = [str(p) for p in shard_paths(demo_out, manifest)]
    ds = load_dataset("webdataset", data_files={"train": files}, split="train",
                      cache_dir=str(tmp_path / "hf"))
    assert len(ds) == manifest["nsamples"]
    row = ds[0]
    assert row["jpg"].size == (256, 256)
    assert row["json"]["key"] == row["__key__"]
    assert row["txt"]


def test_rerun_resumes_and_changes_nothing(demo_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = load_manifest(demo_out)
    assert main(["run", str(DEMO), "--out", str(demo_out), "--quiet"]) == 0
    after = load_manifest(demo_out)
    assert after["shards"] == before["shards"]
    assert after["timing"]["partitions_run"] == 0
    assert "already done" in capsys.readouterr().out


def test_inspect_runs_on_the_demo(demo_out: Path) -> None:
    assert main(["inspect", str(demo_out)]) == 0
    assert (demo_out / "inspect" / "contact_sheet.png").stat().st_size > 10_000
