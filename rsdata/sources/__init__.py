"""Sources: where samples come from (see :mod:`rsdata.sources.base` for the protocol).

``SOURCES`` maps a recipe's ``source.type`` to ``"module:Class"``; a module is imported only when
a recipe uses it. Adding a source type is one class and one line here (the recipe schema's
``source`` definition names the same types: a test checks that they agree).
"""

from __future__ import annotations

import importlib
from typing import Any

from rsdata.sources.base import Partition, PlanContext, Source, SourcePlan

SOURCES: dict[str, str] = {
    "raster": "rsdata.sources.raster:RasterSource",
    "corpus": "rsdata.sources.corpus:CorpusSource",
    "synthetic": "rsdata.sources.synthetic:SyntheticSource",
}


def create_source(config: dict[str, Any], source_id: str, key_prefix: str = "") -> Source:
    """Build the source a recipe entry describes (the recipe schema already checked ``type``)."""
    module, cls = SOURCES[config["type"]].split(":")
    return getattr(importlib.import_module(module), cls)(config, source_id, key_prefix)


__all__ = ["SOURCES", "Partition", "PlanContext", "Source", "SourcePlan", "create_source"]
