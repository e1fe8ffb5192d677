"""Errors rsdata raises on purpose.

Every error says what went wrong *and* what the user should do about it. The CLI prints
``RsdataError`` messages without a traceback and exits with status 2; anything else is a bug.
"""

from __future__ import annotations


class RsdataError(Exception):
    """Base class of every error that is the user's input rather than a bug in rsdata."""


class RecipeError(RsdataError):
    """A recipe file is missing, not YAML, or does not match ``schemas/recipe.schema.json``."""


class InputError(RsdataError):
    """An input file (raster, OSM, manifest) is missing, unreadable or inconsistent."""


class OutputConflictError(RsdataError):
    """The output directory holds the output of a different recipe."""


class MissingDependencyError(RsdataError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, what: str) -> None:
        super().__init__(
            f"{what} needs the optional package '{package}', which is not installed. "
            f"Install it with: pip install 'rsdata[{extra}]'"
        )
        self.package = package
        self.extra = extra


class RunFailedError(RsdataError):
    """A run finished with failed partitions or nothing written."""


class OutputWriteError(RsdataError):
    """Writing the output failed (disk full, quota, file size limit): the run stops."""


class OutputLockedError(OutputConflictError):
    """Another rsdata process holds the output directory's lock (``OUT/.rsdata/lock``)."""


class UsageError(RsdataError):
    """Command-line arguments that cannot work: options that do not fit together, a file given
    where a directory is needed (``--out``, ``rsdata inspect DIR``)."""
