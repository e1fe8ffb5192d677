"""Land cover from a classified raster (ESA WorldCover-style codes): the ``landcover_join`` stage
(:mod:`rsdata.landcover.stage`), class tables (:mod:`rsdata.landcover.classes`) and caption
phrases with their independent checker (:mod:`rsdata.landcover.phrases`)."""

from rsdata.landcover.classes import WORLDCOVER, LandcoverClass, parse_class_table
from rsdata.landcover.phrases import (
    check_landcover_phrase,
    describe_landcover,
    landcover_phrases,
    position_phrase,
)

__all__ = ["WORLDCOVER", "LandcoverClass", "parse_class_table", "check_landcover_phrase",
           "describe_landcover", "landcover_phrases", "position_phrase"]
