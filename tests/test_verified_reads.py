"""No reader accepts bytes it has not verified: a flipped byte inside a JPEG (the tar still
reads) stops score, filter, train and a corpus-source run with a clear error, and makes
``rsdata inspect`` exit non-zero; hostile manifests and tar members are refused."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from rsdata.cli import main
from rsdata.corpus import Corpus, load_manifest
from rsdata.corpus.manifest import write_manifest
from rsdata.corpus.reader import UnsafeShardError, iter_shard
from rsdata.errors import InputError
from rsdata.inputs import sha256_file
from scoring_helpers import encode, scene
from scoring_helpers import write_corpus as write_items


def write_corpus(directory: Path, n: int, per_shard: int) -> Path:
    items = [(f"s{i:03d}", encode(scene(i, size=48)), f"caption {i}", None) for i in range(n)]
    return write_items(directory, items, max_samples_per_shard=per_shard)


def flip(shard: Path, offset: int = 900) -> None:
    data = bytearray(shard.read_bytes())
    data[offset:offset + 200] = bytes(b ^ 0x5A for b in data[offset:offset + 200])
    shard.write_bytes(bytes(data))


@pytest.fixture
def tampered(tmp_path: Path) -> Path:
    corpus = write_corpus(tmp_path / "c", n=16, per_shard=8)
    first = corpus / load_manifest(corpus)["shards"][0]["path"]
    with tarfile.open(first) as tar:  # the flipped bytes lie inside a jpg: the tar still reads
        jpg = next(m for m in tar if m.name.endswith(".jpg"))
        offset = jpg.offset_data + 300
    flip(first, offset)
    with tarfile.open(first) as tar:
        assert len(tar.getmembers()) > 0
    return corpus


def test_inspect_exits_non_zero_on_a_mismatch(tampered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tampered)]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out and "does not match its manifest" in captured.err


def test_filter_refuses_a_changed_shard(tampered: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f"
    assert main(["filter", str(tampered), "--out", str(out), "--dedup", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not match its manifest" in err and "--no-verify" in err
    assert not (out / "manifest.json").exists()
    # a user who knows better can read it anyway
    assert main(["filter", str(tampered), "--out", str(out), "--dedup", "--quiet", "--no-verify"]) == 0


def test_corpus_source_refuses_a_changed_shard_before_writing(tampered: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"version": 1, "name": "again", "stages": [], "output": {},
                                      "source": {"type": "corpus", "path": str(tampered)}}))
    out = tmp_path / "o"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 2
    assert "does not match its manifest" in capsys.readouterr().err
    assert not out.exists()


def test_training_reader_refuses_a_changed_shard(tampered: Path) -> None:
    from rsdata.corpus.reader import IntegrityError

    corpus = Corpus(tampered)
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        list(corpus.entries())
    # unverified reading is explicit
    assert len(list(Corpus(tampered, verify=False).entries())) == 16


def test_manifest_listing_a_shard_twice_or_outside_is_refused(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c", n=8, per_shard=4)
    manifest = load_manifest(corpus)
    twice = dict(manifest, shards=manifest["shards"] + manifest["shards"][:1])
    write_manifest(corpus, twice)
    with pytest.raises(InputError, match="twice"):
        load_manifest(corpus)
    outside = dict(manifest, shards=[dict(manifest["shards"][0], path="../elsewhere/x.tar")])
    write_manifest(corpus, outside)
    with pytest.raises(InputError, match="outside the corpus"):
        load_manifest(corpus)
    (corpus / "manifest.json").write_text('{"format": "rsdata-manifest/1", "na')
    with pytest.raises(InputError, match="half-written or corrupt"):
        load_manifest(corpus)


def _tar_with(member: tarfile.TarInfo, data: bytes, path: Path) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(data))
    return path


def test_huge_and_sparse_members_are_refused_without_reading_them(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSDATA_MAX_MEMBER_BYTES", "1000")
    big = tarfile.TarInfo("k.json")
    big.size = 5000
    shard = _tar_with(big, b"{" + b" " * 4998 + b"}", tmp_path / "big.tar")
    with pytest.raises(UnsafeShardError, match="more than the limit"):
        list(iter_shard(shard))
    # a GNU sparse member that declares 3 GB: refused on its header, nothing allocated
    sparse = tarfile.TarInfo("k.jpg")
    sparse.type = tarfile.GNUTYPE_SPARSE
    sparse.size = 3 * 2**30
    raw = bytearray(sparse.tobuf(format=tarfile.GNU_FORMAT)) + bytes(1024)
    (tmp_path / "sparse.tar").write_bytes(bytes(raw))
    with pytest.raises((UnsafeShardError, InputError)):
        list(iter_shard(tmp_path / "sparse.tar"))


def test_deeply_nested_json_is_a_clear_error(tmp_path: Path) -> None:
    from rsdata.corpus.reader import CorpusError, Entry

    entry = Entry("k", "s.tar", {"json": b"[" * 100000 + b"]" * 100000, "jpg": b"x"})
    with pytest.raises(CorpusError, match="nested too deeply"):
        entry.meta()


def test_verified_reading_costs_the_whole_shard_once(tmp_path: Path) -> None:
    """The digest covers every byte (trailing padding included), so it equals the file's sha256."""
    corpus = write_corpus(tmp_path / "c", n=8, per_shard=8)
    rec = Corpus(corpus).shards()[0]
    seen: list[tuple[int, str]] = []
    list(iter_shard(rec.file, rec, digest=lambda n, h: seen.append((n, h))))
    assert seen == [(rec.file.stat().st_size, sha256_file(rec.file))]
    assert json.loads((corpus / "manifest.json").read_text())["shards"][0]["sha256"] == seen[0][1]


def _png_bomb(side: int = 13000) -> bytes:
    """A small PNG that declares side x side pixels (zeros compress to almost nothing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00" * (side + 1) * 64, 9)  # only the first rows: a truncated bomb
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_image_bombs_are_refused_before_decoding() -> None:
    import time

    from rsdata.imaging import ImageLimitError, decode_rgb

    bomb = _png_bomb()
    assert len(bomb) < 100_000
    started = time.perf_counter()
    with pytest.raises(ImageLimitError, match="more pixels than the limit"):
        decode_rgb(bomb, "sample x")
    assert time.perf_counter() - started < 1.0
    from rsdata.filtering.hashing import open_image as fingerprint_image

    with pytest.raises(ImageLimitError):
        fingerprint_image(bomb)


def test_filter_reports_an_image_bomb_in_a_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scoring_helpers import write_corpus as write_items

    items = [(f"s{i:03d}", encode(scene(i, size=48)), f"caption {i}", None) for i in range(3)]
    items.append(("bomb", _png_bomb(), "a bomb", None))
    corpus = write_items(tmp_path / "c", items, max_samples_per_shard=8)
    assert main(["filter", str(corpus), "--out", str(tmp_path / "f"), "--dedup", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sample bomb" in err and "more pixels than the limit" in err
    assert main(["inspect", str(corpus)]) == 0  # inspect draws "no image" for it and goes on
