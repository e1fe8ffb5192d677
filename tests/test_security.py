"""Inputs that must not be trusted: YAML tags, hostile keys and member names, remote URLs."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rsdata.cli import main
from rsdata.errors import RecipeError
from rsdata.recipe import load_recipe
from rsdata.sample import Sample
from rsdata.corpus.reader import UnsafeShardError, iter_shard
from rsdata.corpus.writer import ShardWriter


def test_yaml_with_python_tags_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("version: 1\nname: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)
    assert not Path("pwned").exists()


@pytest.mark.parametrize("key", ["a.b", "../etc/passwd", "a/b", "", "key with space", ".hidden"])
def test_unsafe_sample_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        Sample(key=key, image=b"x")


def test_writer_refuses_keys_that_bypass_the_constructor(tmp_path: Path) -> None:
    sample = Sample(key="ok", image=b"x", meta={"captions": [{"text": "t", "kind": "template", "template": "x"}]})
    sample.key = "../../escape"
    writer = ShardWriter(tmp_path, "p", 10, 10**6, validate=False)
    with pytest.raises(ValueError, match="safe WebDataset key"):
        writer.write(sample)


def test_raster_ids_with_dots_are_refused_by_the_recipe_schema(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "version": 1, "name": "x", "stages": [], "output": {},
        "source": {"type": "raster", "rasters": [{"id": "../a.b", "path": "x.tif"}], "tile": {"size": 64}}}))
    with pytest.raises(RecipeError, match=r"source\.rasters\[0\]\.id"):
        load_recipe(recipe)


def _tar(path: Path, members: list[tuple[str, bytes, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == tarfile.SYMTYPE:
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name, kind", [("../../evil.json", tarfile.REGTYPE),
                                        ("sub/dir.json", tarfile.REGTYPE),
                                        ("/abs.json", tarfile.REGTYPE),
                                        ("link.json", tarfile.SYMTYPE)])
def test_shard_readers_refuse_hostile_members_and_write_nothing(tmp_path: Path, name: str, kind: bytes) -> None:
    shard = _tar(tmp_path / "s.tar", [("good.json", b"{}", tarfile.REGTYPE), (name, b"{}", kind)])
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(UnsafeShardError):
        list(iter_shard(shard))
    assert not (tmp_path / "evil.json").exists() and list(workdir.iterdir()) == []


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_remote_inputs_need_allow_remote(tmp_path: Path, raster_files: dict[str, Path],
                                         http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    base, root = http_server
    (root / "remote.tif").write_bytes(raster_files["utm_rgb"].read_bytes())
    monkeypatch.setenv("RSDATA_CACHE", str(tmp_path / "cache"))
    recipe = {"version": 1, "name": "remote",
              "source": {"type": "raster", "rasters": [{"id": "r", "path": f"{base}/remote.tif"}],
                         "tile": {"size": 64}},
              "stages": [], "output": {}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(tmp_path / "o1"), "--quiet"]) == 2
    assert "allow_remote: true" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists(), "nothing may be fetched without permission"

    path.write_text(yaml.safe_dump({**recipe, "allow_remote": True}))
    assert main(["run", str(path), "--out", str(tmp_path / "o2"), "--quiet"]) == 0
    import json

    manifest = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert manifest["sources"][0]["path"] == f"{base}/remote.tif"
    assert manifest["nsamples"] == 16
