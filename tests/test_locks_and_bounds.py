"""One writer per output directory, paths of the wrong kind, bounded recipe YAML, and local rasters
that must not reach the network (issue 16: 2, 9, 12 and the clear-error list)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from fixtures import rasters as fx
from rsdata.cli import main
from rsdata.errors import InputError, OutputConflictError, OutputLockedError, RecipeError, UsageError
from rsdata.gdal_env import no_network_env, open_local_raster
from rsdata.lock import output_lock, read_json_state
from rsdata.recipe import MAX_RECIPE_BYTES, load_recipe

REPO = Path(__file__).resolve().parents[1]


def _shards(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*"))}


# -- the output lock ---------------------------------------------------------------------------
def test_a_second_lock_on_one_directory_is_refused_with_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_lock(out, "rsdata run first.yaml") as lock:
        entry = json.loads(lock.path.read_text())
        assert entry["pid"] == os.getpid() and entry["command"] == "rsdata run first.yaml"
        with pytest.raises(OutputLockedError) as err:
            with output_lock(out, "rsdata run second.yaml"):
                pass
        assert isinstance(err.value, OutputConflictError)
        msg = str(err.value)
        assert f"pid {os.getpid()}" in msg and "rsdata run first.yaml" in msg
        assert "started" in msg and "another --out" in msg
    # released: the lock file and the directories this lock created are gone, a new lock works
    assert not out.exists()
    with output_lock(out, "again"):
        pass


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from rsdata.lock import output_lock\n"
         "with output_lock(sys.argv[1], 'holder'):\n    print('held', flush=True); time.sleep(60)",
         str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid}"):
            with output_lock(out, "me"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out, "me"):  # SIGKILL left a lock file behind, but no lock
        pass


def test_check_takes_the_lock_again_after_its_file_was_deleted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_lock(out, "run") as lock:
        lock.path.unlink()  # as an --overwrite that clears OUT/.rsdata does
        lock.check()
        assert lock.path.exists()
        with pytest.raises(OutputLockedError):
            with output_lock(out, "intruder"):
                pass
        lock.path.unlink()
        with output_lock(out, "intruder"):  # someone got in while the file was gone ...
            with pytest.raises(OutputLockedError):
                lock.check()  # ... so the first holder must stop


def _wait_for_holder(lock_file: Path, pid: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the first run ended early: {proc.communicate()}")
        info = read_json_state(lock_file) if lock_file.exists() else None
        if info and info.get("pid") == pid:
            return
        time.sleep(0.02)
    raise AssertionError("the first run never took the lock")


def test_two_runs_on_one_out_the_second_fails_fast_and_the_first_is_intact(
        tmp_path: Path, raster_files: dict[str, Path]) -> None:
    recipe = fx.write_recipe(tmp_path, fx.recipe_dict(raster_files["utm_rgb"], size=32))
    reference = tmp_path / "reference"
    assert main(["run", str(recipe), "--out", str(reference), "--quiet"]) == 0

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rsdata", "run", str(recipe), "--out", str(out), "--quiet"]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        _wait_for_holder(out / ".rsdata" / "lock", first.pid, first)
        os.killpg(first.pid, signal.SIGSTOP)  # hold the first run mid-way, deterministically
        try:
            start = time.monotonic()
            second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
            elapsed = time.monotonic() - start
        finally:
            os.killpg(first.pid, signal.SIGCONT)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("rsdata: error: ")
        assert f"pid {first.pid}" in second.stderr and "started" in second.stderr
        assert "Traceback" not in second.stderr
        assert elapsed < 60
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 0, stderr
    assert _shards(out) == _shards(reference) and _shards(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["nsamples"] == json.loads((reference / "manifest.json").read_text())["nsamples"]
    assert not (out / ".rsdata" / "lock").exists()  # released
    # and now that it is free, the same command resumes (nothing to do) and succeeds
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300).returncode == 0


def test_run_refuses_a_locked_out_dir_before_touching_it(
        tmp_path: Path, raster_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    recipe = fx.write_recipe(tmp_path, fx.recipe_dict(raster_files["utm_rgb"]))
    out = tmp_path / "out"
    with output_lock(out, "rsdata score x --out out"):
        assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 2
    assert f"pid {os.getpid()}" in capsys.readouterr().err
    assert not out.exists()  # no plan, no recipe.json, no shards were written


def test_train_takes_the_run_directory_lock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    with output_lock(run, "rsdata train --out run"):
        assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(run), "--steps", "1",
                     "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "in use by another rsdata process" in err and f"pid {os.getpid()}" in err


# -- paths of the wrong kind -------------------------------------------------------------------
def test_out_that_is_a_file_is_a_clear_error(tmp_path: Path, raster_files: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    recipe = fx.write_recipe(tmp_path, fx.recipe_dict(raster_files["utm_rgb"]))
    target = tmp_path / "out.txt"
    target.write_text("not a directory")
    for argv in (["run", str(recipe), "--out", str(target), "--quiet"],
                 ["run", str(recipe), "--out", str(target / "sub"), "--quiet"],
                 ["train", "--data", str(tmp_path), "--out", str(target), "--steps", "1"],
                 ["inspect", str(tmp_path), "--out", str(target)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("rsdata: error: --out ") and "is a file, not a directory" in err, err
    assert target.read_text() == "not a directory"


def test_inspect_of_a_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    assert main(["inspect", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rsdata: error: rsdata inspect ") and "not a corpus directory" in err
    assert f"rsdata inspect {tmp_path}" in err
    with pytest.raises(UsageError):
        from rsdata.cli import build_parser, check_paths

        check_paths(build_parser().parse_args(["inspect", str(manifest)]))


# -- half-written state ------------------------------------------------------------------------
def test_read_json_state_treats_a_half_written_file_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "recipe.json"
    assert read_json_state(path) is None
    path.write_text('{"name": "demo", "recipe_hash": "ab')  # a killed run's truncated write
    assert read_json_state(path) is None
    path.write_bytes(b"\xff\xfe\x00")
    assert read_json_state(path) is None
    path.write_text("[1, 2]")
    assert read_json_state(path) is None
    path.write_text('{"name": "demo"}')
    assert read_json_state(path) == {"name": "demo"}
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        read_json_state(tmp_path / "dir.json")


# -- bounded recipe YAML -----------------------------------------------------------------------
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9))


def test_billion_laughs_is_refused_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text("version: 1\nname: lol\n" + BILLION_LAUGHS)
    start = time.monotonic()
    with pytest.raises(RecipeError, match="aliases"):
        load_recipe(path)
    assert time.monotonic() - start < 1.0
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "rsdata: error:" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text, match", [
    ("a: &a [1, *a]\n", "recursive"),
    ("x: &x 1\n" + "".join(f"k{i}: *x\n" for i in range(101)), "more than 100 YAML aliases"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
])
def test_hostile_yaml_structures_are_recipe_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=match):
        load_recipe(path)


@pytest.mark.parametrize("value, kind", [
    ("!!binary aGVsbG8gd29ybGQ=", "binary data"),
    ("2024-05-01", "a date"),
    ("2024-02-30", "a date"),  # an impossible date: once a ValueError traceback
    ("2024-05-01 10:00:00", "a date"),
    ("!!set {a, b}", "a set"),
    (".nan", "the number nan"),
])
def test_non_json_yaml_values_name_the_field(tmp_path: Path, raster_files: dict[str, Path],
                                             value: str, kind: str) -> None:
    recipe = fx.recipe_dict(raster_files["utm_rgb"])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe) + f"description: {value}\n")
    with pytest.raises(RecipeError, match=rf"field 'description' is {kind}"):
        load_recipe(path)


def test_non_text_keys_and_nested_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nname: x\nstages:\n  - type: a\n    when: 2020-01-01\n")
    with pytest.raises(RecipeError, match=r"field 'stages\[0\]\.when' is a date"):
        load_recipe(path)
    path.write_text("version: 1\nname: x\nsource: {1: a}\n")
    with pytest.raises(RecipeError, match="key 1"):
        load_recipe(path)


def test_oversized_and_non_utf8_recipes_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\n# " + "x" * MAX_RECIPE_BYTES + "\n")
    with pytest.raises(RecipeError, match="at most"):
        load_recipe(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"version: 1\nname: \xff\xfe\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(binary)


def test_a_few_anchors_and_merge_keys_still_work(tmp_path: Path, raster_files: dict[str, Path]) -> None:
    recipe = fx.recipe_dict(raster_files["utm_rgb"], captions=True)
    text = yaml.safe_dump(recipe).replace("stages:\n", "stages:\n- &cap\n  type: template_captions\n  count: 1\n"
                                                       "  seed: 0\n- <<: *cap\n  seed: 1\n", 1)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    loaded = load_recipe(path)
    assert [s["seed"] for s in loaded.stages[:2]] == [0, 1]


# -- GDAL without network ----------------------------------------------------------------------
class _Counting(http.server.SimpleHTTPRequestHandler):
    """Serves files (with the byte ranges /vsicurl/ asks for) and counts the requests."""

    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        self.requests.append(self.path)

    def do_GET(self) -> None:  # noqa: N802
        spec = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not spec.startswith("bytes=") or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        first, _, last = spec[6:].partition("-")
        start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start:end + 1])


@pytest.fixture
def counting_server(tmp_path: Path, raster_files: dict[str, Path]) -> Iterator[tuple[str, list[str]]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "remote.tif").write_bytes(raster_files["utm_rgb"].read_bytes())
    requests: list[str] = []
    handler = functools.partial(type("H", (_Counting,), {"requests": requests}), directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def vrt_xml(source: str, raster: Path, *, lazy: bool = False, relative: bool = False,
            extra: str = "") -> str:
    """A 3-band VRT of ``raster``'s grid whose bands read ``source``; ``lazy`` adds
    SourceProperties, so GDAL opens the source only on the first read."""
    with rasterio.open(raster) as src:
        width, height, crs, t = src.width, src.height, src.crs.to_wkt(), src.transform
    props = (f'<SourceProperties RasterXSize="{width}" RasterYSize="{height}" DataType="Byte" '
             f'BlockXSize="{width}" BlockYSize="1"/>') if lazy else ""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
        f'<SourceBand>{b}</SourceBand>{props}'
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3))
    return (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{crs}</SRS>'
            f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>{extra}{bands}</VRTDataset>")


@pytest.mark.parametrize("kind", ["vsicurl", "vsicurl-lazy", "http-driver", "nested", "zip-member"])
def test_a_local_tif_that_is_a_vrt_of_remote_data_makes_no_request(
        tmp_path: Path, raster_files: dict[str, Path], counting_server: tuple[str, list[str]],
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    base, requests = counting_server
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # must not open a way around the guard
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    raster = raster_files["utm_rgb"]
    remote = f"/vsicurl/{base}/remote.tif"
    scene = tmp_path / "scene.tif"
    if kind == "vsicurl":
        scene.write_text(vrt_xml(remote, raster))
    elif kind == "vsicurl-lazy":
        scene.write_text(vrt_xml(remote, raster, lazy=True))
    elif kind == "http-driver":
        scene.write_text(vrt_xml(f"{base}/remote.tif", raster))
    elif kind == "nested":
        (tmp_path / "inner.dat").write_text(vrt_xml(remote, raster))
        scene.write_text(vrt_xml("inner.dat", raster, relative=True))
    else:
        with zipfile.ZipFile(tmp_path / "pack.zip", "w") as zf:
            zf.writestr("inner.vrt", vrt_xml(remote, raster, lazy=True))
        scene.write_text(vrt_xml(f"/vsizip/{tmp_path / 'pack.zip'}/inner.vrt", raster, lazy=True))

    from rsdata.sources.raster import _open

    with pytest.raises(InputError, match="allow_remote: true") as err:
        with _open(str(scene)) as src:
            src.read(1)
    assert "references remote data" in str(err.value) or "without network" in str(err.value)
    assert requests == [], f"GDAL made {len(requests)} HTTP request(s) without allow_remote"

    # the same file is read when remote data is allowed (the server does answer)
    if kind in ("vsicurl", "vsicurl-lazy"):
        monkeypatch.delenv("NO_PROXY")
        monkeypatch.delenv("no_proxy")
        with _open(str(scene), allow_remote=True) as src:
            assert src.read(1).shape == (256, 256)
        assert requests


def test_a_run_of_a_remote_vrt_is_refused_without_requests(
        tmp_path: Path, raster_files: dict[str, Path], counting_server: tuple[str, list[str]],
        capsys: pytest.CaptureFixture[str]) -> None:
    base, requests = counting_server
    scene = tmp_path / "scene.tif"
    scene.write_text(vrt_xml(f"/vsicurl/{base}/remote.tif", raster_files["utm_rgb"]))
    recipe = fx.write_recipe(tmp_path, fx.recipe_dict(scene))
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rsdata: error: ") and "allow_remote: true" in err
    assert requests == []


def test_the_no_network_env_blocks_vsicurl(counting_server: tuple[str, list[str]]) -> None:
    base, requests = counting_server
    with pytest.raises(rasterio.errors.RasterioIOError):
        with no_network_env(), rasterio.open(f"/vsicurl/{base}/remote.tif"):
            pass
    assert requests == []


def test_local_vrts_still_open(tmp_path: Path, raster_files: dict[str, Path]) -> None:
    raster = raster_files["utm_rgb"]
    with rasterio.open(raster) as src:
        expected = src.read()
    licence = ('<Metadata><MDI key="LICENSE">https://creativecommons.org/licenses/by/4.0/</MDI>'
               "</Metadata><!-- made from http://example.com/original.tif -->")
    cases = {
        "absolute.vrt": vrt_xml(str(raster), raster, extra=licence),
        "relative.tif": vrt_xml(os.path.relpath(raster, tmp_path), raster, relative=True, lazy=True),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with open_local_raster(tmp_path / name) as src:
            assert src.driver == "VRT"
            assert np.array_equal(src.read(), expected), name
    # a VRT of a local VRT of the GeoTIFF
    (tmp_path / "outer.vrt").write_text(vrt_xml("absolute.vrt", raster, relative=True))
    with open_local_raster(tmp_path / "outer.vrt") as src:
        assert np.array_equal(src.read(), expected)


def test_a_run_over_a_local_vrt_matches_the_geotiff(tmp_path: Path, raster_files: dict[str, Path]) -> None:
    raster = raster_files["utm_rgb"]
    vrt = tmp_path / "scene.vrt"
    vrt.write_text(vrt_xml(str(raster), raster))
    for name, path in (("tif", raster), ("vrt", vrt)):
        recipe = fx.write_recipe(tmp_path, fx.recipe_dict(path), f"{name}.yaml")
        assert main(["run", str(recipe), "--out", str(tmp_path / name), "--quiet"]) == 0
    n = [json.loads((tmp_path / name / "manifest.json").read_text())["nsamples"] for name in ("tif", "vrt")]
    assert n[0] == n[1] > 0
