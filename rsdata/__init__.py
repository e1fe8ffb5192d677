"""rsdata: remote-sensing vision-language corpora from GeoTIFFs and OpenStreetMap."""

from rsdata.sample import Caption, Sample

__version__ = "0.1.0"

__all__ = ["Caption", "Sample", "__version__", "read_chip"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: rasterio loads only when a chip is read
    if name == "read_chip":
        from rsdata.chips import read_chip

        return read_chip
    raise AttributeError(f"module 'rsdata' has no attribute {name!r}")
