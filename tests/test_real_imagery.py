"""Real-imagery correctness the demo never exercised (issue: real imagery, real vectors):
a zero-bordered 16-bit scene without a nodata flag, a 4-band RGB+NIR scene, a raster whose
width is not a multiple of the tile, and chips that default loaders leave alone."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile

import rsdata
from fixtures import rasters as fx
from rsdata.cli import main
from rsdata.corpus import Corpus, load_manifest
from rsdata.errors import InputError
from rsdata.recipe import parse_recipe
from rsdata.sources.raster import RasterSource, plan_raster, plan_windows
from rsdata.stats import StageStats

BORDER = 24  # zero pixels around the Landsat-like scene


def landsat_like(directory: Path) -> Path:
    """3-band uint16 (B2, B3, B4 = blue, green, red), no nodata flag, 0 border, 300 x 260 px
    (not a multiple of 64), undefined colour interpretation, as a Level-1 scene comes."""
    data = fx.to_uint16_reflectance(fx.landscape(11, 3, 260, 300), seed=11)
    data[:, :BORDER, :] = 0
    data[:, -BORDER:, :] = 0
    data[:, :, :BORDER] = 0
    data[:, :, -BORDER:] = 0
    path = fx.write_geotiff(directory / "landsat.tif", data, crs=fx.UTM_CRS, transform=fx.utm_transform(30.0),
                            colorinterp=[ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined])
    import rasterio

    with rasterio.open(path, "r+") as dst:
        for i, name in enumerate(("B2", "B3", "B4"), start=1):
            dst.set_band_description(i, name)
    return path


def rgbn(directory: Path) -> Path:
    """4-band uint8 red, green, blue, near-infrared (band 4 is NIR, not alpha), 5 m."""
    data = fx.to_uint8(fx.landscape(12, 4, 192, 192))
    path = fx.write_geotiff(directory / "rgbn.tif", data, crs=fx.UTM_CRS, transform=fx.utm_transform(5.0),
                            photometric="RGB", alpha="UNSPECIFIED",
                            colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                                         ColorInterp.undefined])
    import rasterio

    with rasterio.open(path, "r+") as dst:
        for i, name in enumerate(("red", "green", "blue", "nir"), start=1):
            dst.set_band_description(i, name)
    return path


def plan_and_read(path: Path, **source: Any) -> tuple[Any, list[Any], StageStats, dict[str, Any]]:
    recipe = parse_recipe(fx.recipe_dict(path, **source), base_dir=path.parent)
    src = RasterSource(recipe.source, "raster")
    entry = recipe.source["rasters"][0]
    prov = {"display_path": path.name, "sha256": "0" * 64, "license": "test", "attribution": "test"}
    info, windows = plan_raster(entry, path, src.settings, prov)
    stats = StageStats("tile")
    samples = [s for part in src._partitions(info, windows) for s in src.read(part, stats)]
    return info, samples, stats, {"windows": windows}


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# --- nodata -----------------------------------------------------------------------------------


def test_zero_border_without_flag_warns_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = landsat_like(tmp_path)
    plan_and_read(path, size=64, max_nodata_fraction=1.0)
    err = capsys.readouterr().err
    assert "exactly 0" in err and "nodata: 0" in err
    assert "B2, B3, B4" in err and "source.bands" in err  # the band order is not R, G, B


def test_declared_nodata_masks_drops_and_leaves_the_stretch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = landsat_like(tmp_path)
    info, samples, stats, _ = plan_and_read(path, size=64, nodata=0, bands=[3, 2, 1])
    assert "exactly 0" not in capsys.readouterr().err  # declared: no warning
    assert info.nodata == [0.0, 0.0, 0.0]
    lows, _ = info.limits
    assert min(lows) >= 300  # the zero border no longer washes out the percentile stretch
    assert stats.dropped["nodata"] > 0 and samples
    for s in samples:
        rgb = decode(s.image)
        black = (rgb.max(axis=2) < 8).mean()
        # black pixels are exactly the ones counted as nodata (JPEG blurs the edge a little)
        assert abs(black - s.meta["geo"]["nodata_fraction"]) < 0.05
        assert s.meta["geo"]["nodata_fraction"] <= 0.05
    # without the declaration the border tiles are kept as black-bordered tiles with 0.0 nodata
    _, plain, _, _ = plan_and_read(path, size=64, bands=[3, 2, 1])
    worst = max((decode(s.image).max(axis=2) < 8).mean() for s in plain)
    assert worst > 0.2 and all(s.meta["geo"]["nodata_fraction"] == 0.0 for s in plain)


@pytest.mark.parametrize("value,match", [(-1, "cannot occur in uint16"), (1.5, "cannot occur"),
                                         ([0, 0], "lists 2 values")])
def test_bad_nodata_is_a_clear_error(tmp_path: Path, value: Any, match: str) -> None:
    path = landsat_like(tmp_path)
    with pytest.raises(InputError, match=match):
        plan_and_read(path, size=64, nodata=value)


def test_nodata_of_the_wrong_type_is_a_recipe_error(tmp_path: Path) -> None:
    from rsdata.errors import RecipeError

    with pytest.raises(RecipeError, match="nodata"):
        parse_recipe(fx.recipe_dict(tmp_path / "x.tif", nodata="zero"), base_dir=tmp_path)


# --- edges -----------------------------------------------------------------------------------


@pytest.mark.parametrize("edge", ["shift", "pad", "drop"])
def test_edge_modes(tmp_path: Path, edge: str) -> None:
    path = fx.utm_rgb(tmp_path)  # 256 px: 96 px tiles leave a 64 px remainder
    info, samples, stats, w = plan_and_read(path, size=96, edge=edge, max_nodata_fraction=0.5)
    windows = w["windows"]
    right = max(x.col_off + x.width for x in windows)
    from rsdata.sources.raster import covered_fraction

    cover = covered_fraction(windows, 256, 256)
    if edge == "shift":
        assert len(windows) == 9 and right == pytest.approx(256) and cover == 1.0
        assert {x.col_off for x in windows} == {0, 96, 160}
        assert all(s.meta["geo"]["nodata_fraction"] == 0 for s in samples)
    elif edge == "pad":
        assert len(windows) == 9 and right == pytest.approx(288) and cover == 1.0
        fractions = sorted(s.meta["geo"]["nodata_fraction"] for s in samples)
        # the padded tiles reach 32 px past the raster: a third of them is nodata -> dropped at 0.5? no:
        # a column or row tile is 1/3 nodata (kept at 0.5), the corner tile 5/9 (dropped)
        assert stats.dropped["nodata"] == 1 and fractions[-1] == pytest.approx(1 / 3, abs=0.02)
        padded = [s for s in samples if s.meta["geo"]["nodata_fraction"] > 0]
        assert all((decode(s.image)[:, -20:].max() < 8) or (decode(s.image)[-20:].max() < 8) for s in padded)
    else:
        assert len(windows) == 4 and right == pytest.approx(192) and cover == pytest.approx(0.5625, abs=0.01)


def test_covered_share_is_in_the_manifest(tmp_path: Path) -> None:
    path = fx.utm_rgb(tmp_path)
    recipe = fx.write_recipe(tmp_path, fx.recipe_dict(path, size=96, edge="drop"))
    assert main(["run", str(recipe), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    report = load_manifest(tmp_path / "o")["source_reports"]["raster"]["r"]
    assert report["edge"] == "drop" and report["covered_fraction"] == pytest.approx(0.5625, abs=0.01)


def test_plan_windows_edge_on_a_geographic_raster(raster_files: dict[str, Path]) -> None:
    import rasterio

    with rasterio.open(raster_files["wgs84_rgb"]) as src:
        for edge in ("shift", "drop"):
            windows, _ = plan_windows(src.crs, src.transform, src.width, src.height, 100, 3.0, 0, edge=edge)
            assert all(w.inside(src.width, src.height) for w in windows)
        shift, _ = plan_windows(src.crs, src.transform, src.width, src.height, 100, 3.0, 0, edge="shift")
        drop, _ = plan_windows(src.crs, src.transform, src.width, src.height, 100, 3.0, 0, edge="drop")
        assert len(shift) > len(drop)


# --- chips -------------------------------------------------------------------------------------


def test_nir_band_is_not_alpha_and_descriptions_travel(tmp_path: Path) -> None:
    path = rgbn(tmp_path)
    _, samples, _, _ = plan_and_read(path, size=64, keep_geotiff=True)
    array, profile = rsdata.read_chip(samples[0].tif)
    assert array.shape == (4, 64, 64) and array.dtype == np.uint8
    assert profile["colorinterp"] == ["red", "green", "blue", "undefined"]
    assert profile["descriptions"] == ["red", "green", "blue", "nir"]
    with MemoryFile(samples[0].tif) as mem, mem.open() as chip:
        assert (chip.dataset_mask() == 255).all()  # NIR is data, not transparency


def corpus(tmp_path: Path, raster: Path, name: str, **source: Any) -> Path:
    recipe = fx.write_recipe(tmp_path, fx.recipe_dict(raster, size=64, keep_geotiff=True, name=name, **source),
                             f"{name}.yaml")
    out = tmp_path / name
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("fixture", ["utm_rgb", "utm_uint16"])
def test_default_loaders_read_the_corpus(raster_files: dict[str, Path], tmp_path: Path, fixture: str) -> None:
    webdataset = pytest.importorskip("webdataset")
    out = corpus(tmp_path, raster_files[fixture], fixture.replace("_", "-"))
    shards = [str(p) for p in sorted((out / "shards").glob("*.tar"))]
    rows = list(webdataset.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert rows and all(isinstance(r["jpg"], Image.Image) and isinstance(r["geotiff"], bytes) for r in rows)
    array, profile = rsdata.read_chip(rows[0]["geotiff"])
    assert array.dtype == np.dtype("uint16" if fixture == "utm_uint16" else "uint8")
    assert str(profile["crs"]) == fx.UTM_CRS
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    first = ds[0]
    assert isinstance(first["jpg"], Image.Image) and isinstance(first["geotiff"], bytes)
    assert len(ds) == load_manifest(out)["nsamples"]


def test_old_corpora_with_a_tif_member_still_read(tmp_path: Path, raster_files: dict[str, Path]) -> None:
    from rsdata.sample import Sample

    sample = next(iter(Corpus(corpus(tmp_path, raster_files["utm_rgb"], "c")).samples()))
    entry = sample.to_wds()
    entry["tif"] = entry.pop("geotiff")
    old = Sample.from_wds({**entry, "json": json.loads(entry["json"])})
    assert old.tif == sample.tif and "tif" not in old.extra


# --- blank tiles ---------------------------------------------------------------------------------


def test_constant_blank_tiles_are_dropped(tmp_path: Path) -> None:
    data = fx.to_uint8(fx.landscape(13, 3, 128, 128))
    data[:, :64, :64] = 255  # an unflagged white blank, as OAM mosaics have at their edges
    path = fx.write_geotiff(tmp_path / "blank.tif", data, crs=fx.UTM_CRS, transform=fx.utm_transform(),
                            photometric="RGB")
    _, samples, stats, _ = plan_and_read(path, size=64)
    assert stats.dropped["blank"] == 1 and len(samples) == 3


# --- mosaics: a folder or glob of tiles read as one raster --------------------------------------


def split_into_tiles(src_path: Path, directory: Path, n: int = 2, sidecar: bool = False) -> Path:
    """Cut a raster into n x n GeoTIFF tiles (with PAM .aux.xml georeferencing if ``sidecar``)."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as wtransform

    directory.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_path) as src:
        data, h, w = src.read(), src.height // n, src.width // n
        for i in range(n):
            for j in range(n):
                win = Window(j * w, i * h, w, h)
                profile = {"driver": "GTiff", "width": w, "height": h, "count": src.count,
                           "dtype": src.dtypes[0], "photometric": "RGB"}
                if not sidecar:
                    profile.update(crs=src.crs, transform=wtransform(win, src.transform))
                path = directory / f"t-{i}-{j}.tif"
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data[:, i * h:(i + 1) * h, j * w:(j + 1) * w])
                if sidecar:  # georeferencing only in a PAM sidecar, as OAM tiles come
                    t = wtransform(win, src.transform)
                    Path(f"{path}.aux.xml").write_text(
                        f"<PAMDataset><SRS>{src.crs.to_wkt()}</SRS><GeoTransform>{t.c!r}, {t.a!r}, "
                        f"0.0, {t.f!r}, 0.0, {t.e!r}</GeoTransform></PAMDataset>")
    return directory


@pytest.mark.parametrize("sidecar", [False, True])
def test_a_glob_of_tiles_reads_as_one_mosaic(tmp_path: Path, sidecar: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSDATA_CACHE", str(tmp_path / "cache"))
    whole = fx.utm_rgb(tmp_path)
    split_into_tiles(whole, tmp_path / "tiles", sidecar=sidecar)
    if sidecar:
        assert list((tmp_path / "tiles").glob("*.aux.xml"))
    out_whole, out_tiles = tmp_path / "a", tmp_path / "b"
    for raster, out, name in ((whole, out_whole, "a.yaml"), (str(tmp_path / "tiles" / "*.tif"), out_tiles, "b.yaml")):
        recipe = fx.write_recipe(tmp_path, fx.recipe_dict(raster, size=64, image_format="png"), name)
        assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    a = {e.key: e for e in Corpus(out_whole).entries()}
    b = {e.key: e for e in Corpus(out_tiles).entries()}
    assert list(a) == list(b) and len(a) == 16
    for key in a:  # the mosaic's pixels are the original's
        assert np.array_equal(decode(a[key].members["png"]), decode(b[key].members["png"]))
        assert json.loads(a[key].members["json"])["geo"]["bounds"] == pytest.approx(
            json.loads(b[key].members["json"])["geo"]["bounds"])
    m = load_manifest(out_tiles)
    entry = next(s for s in m["sources"] if s["role"] == "imagery")
    assert entry["path"].endswith("(4 files)")
    # a changed tile is another input: the recipe hash changes
    tile = sorted((tmp_path / "tiles").glob("*.tif"))[0]
    import rasterio

    with rasterio.open(tile, "r+") as dst:
        arr = dst.read()
        arr[0, 0, 0] ^= 1
        dst.write(arr)
    recipe = fx.write_recipe(tmp_path, fx.recipe_dict(str(tmp_path / "tiles" / "*.tif"), size=64), "c.yaml")
    assert main(["run", str(recipe), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert load_manifest(tmp_path / "c")["recipe_hash"] != m["recipe_hash"]


def test_a_mosaic_with_gaps_masks_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSDATA_CACHE", str(tmp_path / "cache"))
    split_into_tiles(fx.utm_rgb(tmp_path), tmp_path / "tiles")
    (tmp_path / "tiles" / "t-0-1.tif").unlink()  # the top-right quarter is missing
    _, samples, stats, _ = plan_and_read_glob(tmp_path / "tiles" / "*.tif")
    assert stats.dropped["nodata"] == 4 and len(samples) == 12


def plan_and_read_glob(pattern: Path) -> tuple[Any, list[Any], StageStats, Any]:
    from rsdata.inputs import InputRegistry
    from rsdata.sources.base import PlanContext

    recipe = parse_recipe(fx.recipe_dict(str(pattern), size=64), base_dir=pattern.parent)
    src = RasterSource(recipe.source, "raster")
    plan = src.plan(PlanContext(base_dir=pattern.parent, out_dir=pattern.parent / "out",
                                registry=InputRegistry([])))
    stats = StageStats("tile")
    samples = [s for part in plan.partitions for s in src.read(part, stats)]
    return plan, samples, stats, None


def test_bad_mosaics_are_clear_errors(tmp_path: Path, raster_files: dict[str, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setenv("RSDATA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="names no raster files"):
        plan_and_read_glob(tmp_path / "nothing" / "*.tif")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(raster_files["utm_rgb"], mixed / "a.tif")
    shutil.copy(raster_files["wgs84_rgb"], mixed / "b.tif")
    with pytest.raises(InputError, match="differ in CRS"):
        plan_and_read_glob(mixed / "*.tif")
