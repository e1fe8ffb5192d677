"""The shard writer's tar stream: byte for byte what tarfile and webdataset write, for short and
long names, any size, and shards that tar, webdataset and the corpus reader all read back."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from pathlib import Path

import pytest

from rsdata.corpus.writer import (
    TAR_MODE, TAR_MTIME, TAR_USER, SIZE_LIMIT, TarStream, _tarinfo, tar_header,
)


def tarfile_header(name: str, size: int) -> bytes:
    """What ``tarfile`` puts in a stream before a member's data (its default PAX format)."""
    return _tarinfo(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize("name", [
    "a.jpg", "x" * 96 + ".jpg", "x" * 97 + ".jpg",  # 100 (fits the field exactly) and 101 bytes
    "src-1_00003_00012.geotiff", "syn_hel-00042.layout.png", "k.\u00e9t\u00e9.json", "k.\udcff.bin",
    "deep/" * 40 + "k.txt",
])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 123_456])
def test_headers_match_tarfile(name: str, size: int) -> None:
    assert tar_header(name, size) == tarfile_header(name, size)


def test_headers_match_tarfile_for_random_names_and_sizes() -> None:
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
    for _ in range(300):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 130)))
        size = rng.choice([rng.randint(0, 5000), rng.randint(0, 10**6)])
        assert tar_header(name, size) == tarfile_header(name, size), (name, size)


def test_a_member_too_large_for_ustar_gets_a_pax_size() -> None:
    header = tar_header("k.tif", SIZE_LIMIT)
    assert len(header) > 512 and b"size=" in header  # tarfile's PAX record, not a wrapped field
    assert header == tarfile_header("k.tif", SIZE_LIMIT)


def entries(n: int, seed: int = 3) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for i in range(n):
        key = f"r{i % 3}_{i:05d}_{rng.randint(0, 99999):05d}" + ("x" * rng.choice([0, 80]))
        out.append({"__key__": key, "jpg": rng.randbytes(rng.randint(0, 3000)),
                    "json": b'{"k": %d}' % i, "txt": rng.randbytes(rng.choice([0, 512, 700])),
                    "geotiff": rng.randbytes(1024)})
    return out


def tarfile_stream(samples: list[dict[str, object]]) -> bytes:
    """The reference: the standard library's stream writer, as webdataset uses it."""
    buf = io.BytesIO()
    tar = tarfile.open(fileobj=buf, mode="w|")
    for entry in samples:
        for member in sorted(entry):
            if member == "__key__":
                continue
            data = entry[member]
            assert isinstance(data, bytes)
            info = tarfile.TarInfo(f"{entry['__key__']}.{member}")
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, TAR_MODE
            info.uname = info.gname = TAR_USER
            tar.addfile(info, io.BytesIO(data))
    tar.close()
    return buf.getvalue()


@pytest.mark.parametrize("n", [0, 1, 7, 40])
def test_streams_match_tarfile_and_read_back(n: int) -> None:
    samples = entries(n)
    buf = io.BytesIO()
    stream = TarStream(buf)
    for entry in samples:
        stream.write(entry)
    stream.close()
    stream.close()  # closing twice writes nothing more
    data = buf.getvalue()
    assert data == tarfile_stream(samples)
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = [m.name for m in tar.getmembers()]
        assert all(m.mode == TAR_MODE and m.mtime == TAR_MTIME for m in tar.getmembers())
        read = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert names == [f"{e['__key__']}.{m}" for e in samples for m in sorted(e) if m != "__key__"]
    assert all(read[f"{e['__key__']}.{m}"] == e[m] for e in samples for m in e if m != "__key__")


def test_shards_are_byte_identical_to_webdatasets(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    samples = entries(25, seed=11)
    mine = io.BytesIO()
    stream = TarStream(mine)
    for entry in samples:
        stream.write(entry)
    stream.close()
    peer = tmp_path / "peer.tar"
    with wds.TarWriter(str(peer), encoder=False, mtime=TAR_MTIME) as writer:
        for entry in samples:
            writer.write(entry)
    assert hashlib.sha256(mine.getvalue()).hexdigest() == hashlib.sha256(peer.read_bytes()).hexdigest()
    rows = list(wds.WebDataset(str(peer), shardshuffle=False))
    assert [r["__key__"] for r in rows] == [e["__key__"] for e in samples]
