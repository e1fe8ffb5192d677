"""The source protocol: where samples come from.

A source is configured by plain values (so it pickles to workers, like a stage). In the driver,
:meth:`Source.plan` checks its inputs and returns a :class:`SourcePlan`: picklable
:class:`Partition` s (an id plus a plain payload), the input files it read (their checksums go
into the recipe hash and the manifest), where its samples lie on the map (footprints, for
stages such as the OSM join), and facts for the manifest. In a worker, :meth:`Source.read`
turns one partition into an iterator of :class:`~rsdata.sample.Sample` s, counting what it
took in and dropped in ``stats`` (its stats entry is named :attr:`Source.stats_name`).

Executors, completion markers, resume, Ray and the shard writer know only this protocol; a new
kind of source is one class here plus one line in :data:`rsdata.sources.SOURCES`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rsdata.sample import Sample
from rsdata.stats import StageStats

if TYPE_CHECKING:
    from rsdata.inputs import InputRegistry

PARTITION_SEPARATOR = "."  # ids never hold a dot: partition (and shard) names cannot collide
_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Partition:
    """The unit of parallel work, of shards and of resume.

    ``id`` is unique in the run and names the partition's shards and marker; ``size`` is the
    number of items (tiles, samples) the source will read, for progress and drop rates;
    ``payload`` is plain picklable data only the owning source interprets.
    """

    id: str
    source: str
    size: int
    payload: Any


def partition_id(*parts: str | int) -> str:
    """``partition_id("swellendam-3420b", 3)`` -> ``swellendam-3420b.00003``."""
    out = []
    for p in parts:
        if isinstance(p, int):
            out.append(f"{p:05d}")
        elif _ID.match(p):
            out.append(p)
        else:
            raise ValueError(f"partition id part {p!r} may only hold letters, digits, '_' and '-'")
    return PARTITION_SEPARATOR.join(out)


@dataclass
class InputRecord:
    """One input file a source read: for the recipe hash and the manifest's ``sources``."""

    hash_key: str  # how the file is named in the recipe hash (relative path or URL)
    sha256: str
    manifest_entry: dict[str, Any] | None  # InputFile.to_json(display); None: hashed, not listed


@dataclass
class SourcePlan:
    """What a source planned in the driver."""

    partitions: list[Partition]
    inputs: list[InputRecord] = field(default_factory=list)
    footprints_wgs84: list[tuple[float, float, float, float]] = field(default_factory=list)
    footprint_crs: list[str] = field(default_factory=list)
    parents: list[dict[str, Any]] = field(default_factory=list)  # corpora this source reads
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.partitions)


@dataclass
class PlanContext:
    """What a source may know while planning."""

    base_dir: Path
    out_dir: Path
    registry: "InputRegistry"
    allow_remote: bool = False

    def resolve(self, path: str) -> Path:
        from rsdata.remote import resolve_input

        return resolve_input(path, self.base_dir, self.allow_remote)

    def display(self, path: Path) -> str:
        """A path as a reader of the manifest would want it: relative to the current directory
        when it lies below it, else absolute."""
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path.resolve())


class Source:
    """Base class of sources. Subclasses set ``type`` and ``stats_name`` and implement
    :meth:`plan` and :meth:`read`."""

    type: ClassVar[str] = "source"
    stats_name: ClassVar[str] = "source"

    def __init__(self, config: dict[str, Any], source_id: str, key_prefix: str = "") -> None:
        self.config = {k: v for k, v in config.items() if k not in ("type", "id")}
        self.id = source_id
        self.key_prefix = key_prefix  # prepended to every key ("" for a recipe's single source)

    def key(self, raw: str) -> str:
        return f"{self.key_prefix}{raw}"

    def plan(self, ctx: PlanContext) -> SourcePlan:
        raise NotImplementedError

    def read(self, partition: Partition, stats: StageStats) -> Iterator[Sample]:
        raise NotImplementedError

    def resources(self) -> dict[str, float]:
        """Resources a worker reading this source needs besides one CPU (e.g. ``{"num_gpus": 1}``)."""
        return {}
