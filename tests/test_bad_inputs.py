"""What the user sees when an input is wrong: a clear ``RsdataError`` (the CLI prints it and
exits with status 2), never a traceback; and the ways around it (on_read_error: skip, crs:,
--overwrite) work."""

from __future__ import annotations

import gc
import json
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest
import rasterio
import yaml
from rasterio.windows import Window

from fixtures import rasters as fx
from rsdata.cli import main
from rsdata.errors import (
    InputError,
    OutputConflictError,
    RecipeError,
    RsdataError,
    RunFailedError,
)
from rsdata.executors.local import run_local
from rsdata.inputs import sha256_file
from rsdata.plan import build_plan
from rsdata.recipe import load_recipe

MakeRecipe = Callable[..., Path]


def run_cli(capsys: pytest.CaptureFixture[str], recipe: Path | str, out: Path,
            *extra: str) -> tuple[int, str, str]:
    """``rsdata run RECIPE --out OUT --quiet [extra]`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["run", str(recipe), "--out", str(out), "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stage(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in manifest["stages"] if s["name"] == name)


def read_manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def no_traceback(err: str) -> None:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("rsdata: ")]
    # warnings (e.g. about band order) may come first; the error is the last rsdata line
    assert lines and lines[-1].startswith("rsdata: error: ") or err.startswith("rsdata: error: ")


# --- rasters ----------------------------------------------------------------------------------


def test_missing_raster(make_recipe: MakeRecipe, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "scene_3420B.tif"
    code, _, err = run_cli(capsys, make_recipe(missing), tmp_path / "out")
    assert code == 2
    no_traceback(err)
    assert "raster not found" in err and "scene_3420B.tif" in err
    assert "relative to the recipe file" in err


def test_missing_raster_relative_path_is_resolved_against_the_recipe(
        make_recipe: MakeRecipe, tmp_path: Path) -> None:
    recipe = load_recipe(make_recipe("rasters/missing.tif"))
    with pytest.raises(InputError, match="raster not found: .*rasters/missing.tif") as info:
        build_plan(recipe, tmp_path / "out")
    assert str(tmp_path) in str(info.value)


def test_non_raster_tif(raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, make_recipe(raster_files["not_a_raster"]), tmp_path / "out")
    assert code == 2
    no_traceback(err)
    assert "cannot open raster" in err and "not_a_raster.tif" in err
    assert "not a raster GDAL can read" in err


def test_empty_tif(make_recipe: MakeRecipe, tmp_path: Path) -> None:
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="cannot open raster .*empty.tif"):
        build_plan(load_recipe(make_recipe(empty)), tmp_path / "out")


def unreadable_windows(path: Path, size: int) -> int:
    """How many size x size windows of ``path`` GDAL fails to read (checked independently)."""
    bad = 0
    with rasterio.open(path) as src:
        for row in range(src.height // size):
            for col in range(src.width // size):
                try:
                    src.read(window=Window(col * size, row * size, size, size))
                except rasterio.errors.RasterioError:
                    bad += 1
    return bad


def test_truncated_geotiff_fails_with_a_clear_error(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = raster_files["truncated"]
    assert 0 < unreadable_windows(path, 64) < 16  # the fixture opens, and half of it reads
    code, _, err = run_cli(capsys, make_recipe(path), tmp_path / "out")
    assert code == 2
    no_traceback(err)
    assert "truncated.tif" in err
    assert "cannot read tile" in err
    assert "on_read_error: skip" in err
    assert "partitions failed" in err


def test_truncated_geotiff_raises_run_failed(raster_files: dict[str, Path],
                                             make_recipe: MakeRecipe, tmp_path: Path) -> None:
    plan = build_plan(load_recipe(make_recipe(raster_files["truncated"])), tmp_path / "out")
    with pytest.raises(RunFailedError, match=r"InputError: .*truncated.tif: cannot read tile"):
        run_local(plan, progress=False)


def test_truncated_geotiff_with_on_read_error_skip(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = raster_files["truncated"]
    bad = unreadable_windows(path, 64)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, make_recipe(path, on_read_error="skip"), out)
    assert code == 0, err
    manifest = read_manifest(out)
    tile = stage(manifest, "tile")
    assert tile["in"] == 16
    assert tile["dropped"] == {"read_error": bad}
    assert tile["out"] == manifest["nsamples"] == 16 - bad
    assert "read_error" in stdout  # the summary shows the drops


def test_truncated_uint16_geotiff_fails_with_a_clear_error(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """16-bit rasters are read while planning (to estimate the percentile stretch): an
    unreadable window there is an InputError too, not a crash with a traceback."""
    path = raster_files["truncated_uint16"]
    code, _, err = run_cli(capsys, make_recipe(path), tmp_path / "out")
    assert code == 2
    no_traceback(err)
    assert "truncated_uint16.tif" in err and "on_read_error: skip" in err


def test_truncated_uint16_geotiff_with_on_read_error_skip(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """on_read_error: skip also covers the windows read while planning."""
    path = raster_files["truncated_uint16"]
    bad = unreadable_windows(path, 64)
    assert 0 < bad < 9
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, make_recipe(path, on_read_error="skip"), out)
    assert code == 0, err
    tile = stage(read_manifest(out), "tile")
    assert tile["in"] == 9 and tile["dropped"] == {"read_error": bad}


def test_following_the_read_error_advice_reuses_the_output(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path) -> None:
    """The read error says 'set source.on_read_error: skip'; doing so and running the same
    command again works: the failed run wrote nothing, so there is nothing to mix with."""
    path = raster_files["truncated"]
    out = tmp_path / "out"
    with pytest.raises(RunFailedError, match="on_read_error: skip"):
        run_local(build_plan(load_recipe(make_recipe(path)), out), progress=False)
    assert not list((out / "shards").glob("*.tar"))  # the failed run wrote nothing
    plan = build_plan(load_recipe(make_recipe(path, on_read_error="skip", filename="r2.yaml")), out)
    assert run_local(plan, progress=False).manifest["nsamples"] > 0


def test_failed_partition_leaves_no_stray_exception(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An aborted shard closes its tar stream; else the stream's finaliser later writes to the
    closed file and Python prints 'Exception ignored in ... _Stream.__del__' with a traceback."""
    seen: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook",
                        lambda u: seen.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object}"))
    plan = build_plan(load_recipe(make_recipe(raster_files["truncated"])), tmp_path / "out")
    with pytest.raises(RunFailedError):
        run_local(plan, progress=False)
    gc.collect()
    assert seen == []
    assert not [p for p in (tmp_path / "out" / "shards").iterdir()]  # no temp file left behind


def test_raster_smaller_than_one_tile(raster_files: dict[str, Path], make_recipe: MakeRecipe,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """128 px at 2 m = 256 m; a 64 px tile at 5 m = 320 m: no tile fits, the run fails."""
    code, _, err = run_cli(capsys, make_recipe(raster_files["no_crs"], crs="EPSG:32734", gsd=5.0),
                           tmp_path / "out")
    assert code == 2
    no_traceback(err)
    assert "large enough for one tile of 64 px at 5.0 m" in err


def test_geotiff_without_crs(raster_files: dict[str, Path], make_recipe: MakeRecipe,
                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = raster_files["no_crs"]
    code, _, err = run_cli(capsys, make_recipe(path), tmp_path / "out")
    assert code == 2
    no_traceback(err)
    assert "no_crs.tif has no CRS" in err
    assert "source.rasters[].crs" in err and "gdal_edit.py -a_srs" in err


def test_geotiff_without_crs_passes_with_crs_in_the_recipe(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, make_recipe(raster_files["no_crs"], crs="EPSG:32734",
                                               keep_geotiff=True), out)
    assert code == 0, err
    manifest = read_manifest(out)
    assert manifest["nsamples"] == 4  # 128 x 128 px, 64 px tiles
    with tarfile.open(out / manifest["shards"][0]["path"]) as tar:
        metas = [json.loads(tar.extractfile(m).read())  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(metas) == 4
    for meta in metas:
        assert meta["geo"]["crs"] == "EPSG:32734" and meta["geo"]["crs_from_recipe"] is True
        w, s, e, n = meta["geo"]["bounds_wgs84"]
        assert 20.49 < w < e < 20.51 and -34.01 < s < n < -33.99


def test_crs_in_the_recipe_is_ignored_when_the_file_has_one(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path) -> None:
    plan = build_plan(load_recipe(make_recipe(raster_files["utm_grey"], crs="EPSG:4326")),
                      tmp_path / "out")
    info = plan.partitions[0].payload.raster
    assert "UTM zone 34S" in info.crs_wkt and info.crs_from_recipe is False


def test_bad_crs_in_the_recipe(raster_files: dict[str, Path], make_recipe: MakeRecipe,
                               tmp_path: Path) -> None:
    recipe = load_recipe(make_recipe(raster_files["no_crs"], crs="EPSG:nope"))
    with pytest.raises(InputError, match=r"source.rasters\[\].crs 'EPSG:nope' is not a CRS"):
        build_plan(recipe, tmp_path / "out")


def test_all_nodata_raster(raster_files: dict[str, Path], make_recipe: MakeRecipe,
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, make_recipe(raster_files["all_nodata"]), out)
    assert code == 2
    no_traceback(err)
    assert "wrote 0 samples" in err and "output.min_samples = 1" in err
    assert "tile/nodata: 4" in err  # 128 x 128 px, 64 px tiles, every one nodata
    manifest = read_manifest(out)  # the manifest still records what happened
    assert manifest["nsamples"] == 0 and manifest["shards"] == []
    assert stage(manifest, "tile") == {"name": "tile", "in": 4, "out": 0, "dropped": {"nodata": 4}}


def test_all_nodata_raster_raises_run_failed(raster_files: dict[str, Path],
                                             make_recipe: MakeRecipe, tmp_path: Path) -> None:
    plan = build_plan(load_recipe(make_recipe(raster_files["all_nodata"])), tmp_path / "out")
    with pytest.raises(RunFailedError, match="nodata"):
        run_local(plan, progress=False)
    assert (tmp_path / "out" / "manifest.json").exists()


def test_all_nodata_raster_with_min_samples_0_succeeds(
        raster_files: dict[str, Path], make_recipe: MakeRecipe, tmp_path: Path) -> None:
    plan = build_plan(load_recipe(make_recipe(raster_files["all_nodata"],
                                              output={"min_samples": 0})), tmp_path / "out")
    result = run_local(plan, progress=False)
    assert result.manifest["nsamples"] == 0


# --- recipes ----------------------------------------------------------------------------------


def recipe_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Any | str) -> str:
    """Write ``data`` (a dict as YAML, or raw text) as a recipe, run it, return stderr."""
    path = tmp_path / "bad.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    code, _, err = run_cli(capsys, path, tmp_path / "out")
    assert code == 2
    no_traceback(err)
    with pytest.raises(RecipeError):
        load_recipe(path)
    assert not (tmp_path / "out").exists()  # nothing was claimed or written
    return err


def good(raster_files: dict[str, Path]) -> dict[str, Any]:
    return fx.recipe_dict(raster_files["utm_grey"])


def test_unknown_stage_type(raster_files: dict[str, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    data = good(raster_files)
    data["stages"] = [{"type": "llm_captions"}]
    err = recipe_error(capsys, tmp_path, data)
    assert "stages[0].type" in err and "'llm_captions'" in err
    assert "'osm_join', 'template_captions'" in err


def test_wrong_type(raster_files: dict[str, Path], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    data = good(raster_files)
    data["source"]["tile"]["size"] = "big"
    err = recipe_error(capsys, tmp_path, data)
    assert "source.tile.size: expected integer, got str 'big'" in err


def test_value_out_of_range(raster_files: dict[str, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    data = good(raster_files)
    data["source"]["max_nodata_fraction"] = 5
    err = recipe_error(capsys, tmp_path, data)
    assert "source.max_nodata_fraction" in err


def test_misspelt_field(raster_files: dict[str, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    data = good(raster_files)
    data["source"]["tile"]["sise"] = 64
    err = recipe_error(capsys, tmp_path, data)
    assert "source.tile" in err and "'sise'" in err and "allowed fields" in err


def test_missing_field(raster_files: dict[str, Path], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    data = good(raster_files)
    del data["source"]
    err = recipe_error(capsys, tmp_path, data)
    assert "'source' is a required property" in err


def test_missing_nested_field(raster_files: dict[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    data = good(raster_files)
    del data["source"]["rasters"][0]["path"]
    err = recipe_error(capsys, tmp_path, data)
    assert "source.rasters[0]" in err and "'path' is a required property" in err


def test_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = recipe_error(capsys, tmp_path, "version: 1\nname: [unclosed\nsource: {\n")
    assert "bad.yaml is not valid YAML" in err


def test_yaml_that_is_not_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = recipe_error(capsys, tmp_path, "- just\n- a list\n")
    assert "a recipe is a YAML mapping" in err and "got list" in err


def test_missing_recipe_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, tmp_path / "pipelines" / "nope.yaml", tmp_path / "out")
    assert code == 2
    no_traceback(err)
    assert "recipe file not found" in err and "nope.yaml" in err


def test_overlap_not_smaller_than_size(raster_files: dict[str, Path], make_recipe: MakeRecipe,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, make_recipe(raster_files["utm_grey"], size=32, overlap=32),
                           tmp_path / "out")
    assert code == 2
    assert "source.tile.overlap (32) must be smaller than the tile size (32)" in err


def test_duplicate_raster_ids(raster_files: dict[str, Path], tmp_path: Path) -> None:
    data = good(raster_files)
    data["source"]["rasters"].append(dict(data["source"]["rasters"][0]))
    path = fx.write_recipe(tmp_path, data)
    with pytest.raises(RecipeError, match=r"ids must be unique.*\['r'\]"):
        build_plan(load_recipe(path), tmp_path / "out")


def test_bad_cli_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "r.yaml"), "--workers", "0"])
    assert info.value.code == 2
    assert "expected 1 or more" in capsys.readouterr().err


# --- output directories -----------------------------------------------------------------------


def test_output_of_another_recipe_is_refused(raster_files: dict[str, Path],
                                             make_recipe: MakeRecipe, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    first = make_recipe(raster_files["utm_grey"], name="first")
    code, _, err = run_cli(capsys, first, out)
    assert code == 0, err
    old = read_manifest(out)

    # the same recipe again: nothing to do, accepted
    code, stdout, err = run_cli(capsys, first, out)
    assert code == 0, err
    timing = read_manifest(out)["timing"]  # 192 x 192 px: 9 tiles, one partition, done
    assert (timing["partitions_run"], timing["partitions_skipped"]) == (0, 1)

    changed = make_recipe(raster_files["utm_grey"], name="first", overlap=16, filename="r2.yaml")
    code, _, err = run_cli(capsys, changed, out)
    assert code == 2
    no_traceback(err)
    assert "--overwrite" in err and "another recipe" in err and str(out) in err
    with pytest.raises(OutputConflictError, match="--overwrite"):
        build_plan(load_recipe(changed), out)
    assert read_manifest(out)["recipe_hash"] == old["recipe_hash"]  # untouched

    code, _, err = run_cli(capsys, changed, out, "--overwrite")
    assert code == 0, err
    new = read_manifest(out)
    assert new["recipe_hash"] != old["recipe_hash"]
    assert new["recipe"]["source"]["tile"]["overlap"] == 16
    # 64 px tiles every 48 px: floor((192-64)/48)+1 = 3 per side, plus one shifted to the edge
    # (tile.edge: shift) = 4 per side, at other places than before
    assert new["nsamples"] == 16
    assert [s["sha256"] for s in new["shards"]] != [s["sha256"] for s in old["shards"]]
    on_disk = {f"shards/{p.name}": sha256_file(p) for p in (out / "shards").iterdir()}
    assert on_disk == {s["path"]: s["sha256"] for s in new["shards"]}


def test_changed_input_file_changes_the_recipe_hash(raster_files: dict[str, Path],
                                                    make_recipe: MakeRecipe, tmp_path: Path) -> None:
    """Same recipe text, different raster bytes: another corpus, so the output is refused."""
    raster = tmp_path / "scene.tif"
    raster.write_bytes(raster_files["utm_grey"].read_bytes())
    recipe = make_recipe(raster)
    out = tmp_path / "out"
    run_local(build_plan(load_recipe(recipe), out), progress=False)
    raster.write_bytes(raster_files["utm_rgb"].read_bytes())
    with pytest.raises(OutputConflictError, match="other inputs"):
        build_plan(load_recipe(recipe), out)


# --- input manifests --------------------------------------------------------------------------


def write_inputs_manifest(tmp_path: Path, raster: Path, sha256: str) -> Path:
    path = tmp_path / "manifests" / "fixtures.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": "fixtures",
        "files": [{"path": str(raster), "role": "imagery", "sha256": sha256,
                   "license": "CC-BY-4.0", "attribution": "rsdata test fixtures"}],
    }), encoding="utf-8")
    return path


def test_checksum_mismatch(raster_files: dict[str, Path], make_recipe: MakeRecipe,
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raster = raster_files["utm_grey"]
    manifest = write_inputs_manifest(tmp_path, raster, "0" * 64)
    recipe = make_recipe(raster, inputs=[str(manifest)])
    code, _, err = run_cli(capsys, recipe, tmp_path / "out")
    assert code == 2
    no_traceback(err)
    assert "checksum mismatch" in err and "utm_grey.tif" in err and "fixtures.yaml" in err
    with pytest.raises(InputError, match=r"checksum mismatch for .*utm_grey.tif: .*fixtures.yaml "
                                         r"says 000000000000\.\.\."):
        build_plan(load_recipe(recipe), tmp_path / "out")


def test_matching_checksum_carries_license(raster_files: dict[str, Path],
                                           make_recipe: MakeRecipe, tmp_path: Path) -> None:
    raster = raster_files["utm_grey"]
    manifest = write_inputs_manifest(tmp_path, raster, sha256_file(raster))
    plan = build_plan(load_recipe(make_recipe(raster, inputs=[str(manifest)])), tmp_path / "out")
    assert plan.inputs[0]["license"] == "CC-BY-4.0"
    assert plan.inputs[0]["manifest"] == str(manifest)
    assert plan.partitions[0].payload.raster.license == "CC-BY-4.0"


def test_missing_or_invalid_inputs_manifest(raster_files: dict[str, Path],
                                            make_recipe: MakeRecipe, tmp_path: Path) -> None:
    raster = raster_files["utm_grey"]
    recipe = make_recipe(raster, inputs=["manifests/none.yaml"])
    with pytest.raises(InputError, match="input manifest not found: .*none.yaml"):
        build_plan(load_recipe(recipe), tmp_path / "out")
    bad = tmp_path / "manifests" / "bad.yaml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(yaml.safe_dump({"name": "x", "files": [{"path": "a.tif"}]}))
    recipe = make_recipe(raster, inputs=[str(bad)], filename="r2.yaml")
    with pytest.raises(InputError, match="not a valid input manifest"):
        build_plan(load_recipe(recipe), tmp_path / "out")


def test_every_user_error_is_an_rsdata_error() -> None:
    for cls in (RecipeError, InputError, OutputConflictError, RunFailedError):
        assert issubclass(cls, RsdataError)
