"""rsdata: remote-sensing vision-language corpora from GeoTIFFs and OpenStreetMap."""

from rsdata.sample import Caption, Sample

__version__ = "0.1.0"

__all__ = ["Caption", "Sample", "__version__"]
