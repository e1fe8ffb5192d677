"""Read WebDataset shards safely: streamed, in memory, member names checked.

Shards may come from elsewhere (a download, a colleague, an annotation round). Nothing here
extracts to the file system by member name; member names with path separators, ``..``, a
leading dot, or that are not regular files (links, devices) are refused, since a writer that
produced them is either broken or hostile.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from rsdata.errors import InputError
from rsdata.manifest import load_manifest, shard_paths
from rsdata.sample import Sample

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")


class UnsafeShardError(InputError):
    """A shard holds a member whose name or type a sample cannot have."""


def split_member(member: tarfile.TarInfo, shard: Path) -> tuple[str, str]:
    """``abc_1_2.json`` -> (``abc_1_2``, ``json``); refuse anything that is not a plain sample file."""
    name = member.name
    if not member.isfile():
        raise UnsafeShardError(f"{shard}: member {name!r} is not a regular file (a link or device); "
                               "refusing to read a shard rsdata could not have written")
    if not _SAFE_NAME.match(name) or ".." in name:
        raise UnsafeShardError(f"{shard}: unsafe member name {name!r} (path separators, '..' or a "
                               "leading dot); refusing to read this shard")
    key, _, ext = name.partition(".")
    return key, ext.lower()


def iter_raw(path: str | Path, extensions: Collection[str] | None = None,
             skip: Collection[str] = ()) -> Iterator[dict[str, Any]]:
    """Entries of one shard as ``{"__key__": key, ext: bytes, ...}``, streamed in tar order.

    ``extensions`` limits which members are read into memory, ``skip`` names members never
    read (e.g. large ``tif`` chips); the others are passed over unread.
    """
    path = Path(path)
    try:
        with tarfile.open(path, mode="r|") as tar:
            current: dict[str, Any] | None = None
            for member in tar:
                key, ext = split_member(member, path)
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key}
                if (extensions is None or ext in extensions) and ext not in skip:
                    fh = tar.extractfile(member)
                    current[ext] = fh.read() if fh is not None else b""
            if current is not None:
                yield current
    except FileNotFoundError:
        raise InputError(f"shard not found: {path}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise InputError(f"{path} is not a readable tar shard ({exc}); it is truncated or corrupt. "
                         "Check it against the manifest's sha256 (rsdata inspect does).") from None


def iter_samples(out_dir: str | Path, manifest: dict[str, Any] | None = None) -> Iterator[Sample]:
    """Every sample of a corpus, in manifest order."""
    manifest = manifest or load_manifest(out_dir)
    for path in shard_paths(out_dir, manifest):
        for entry in iter_raw(path):
            yield Sample.from_wds(entry)
