"""One exception hierarchy for every error a user can fix.

Each message names the input, says what is wrong and how to fix it, on one line. The CLI
prints the message and exits with code 2; anything else reaching the user is a bug.
"""

from __future__ import annotations


class AgrimonError(Exception):
    """Base of every error caused by bad input or a failing remote service."""

    exit_code = 2


class AoiError(AgrimonError):
    """The area of interest cannot be used."""


class AoiNotFoundError(AoiError):
    """The AOI file does not exist."""


class AoiFormatError(AoiError):
    """The AOI file cannot be read as vector data."""


class AoiGeometryError(AoiError):
    """The AOI has no usable polygon geometry."""


class AoiCoordinateError(AoiError):
    """The AOI's coordinates are outside lon/lat range or look swapped."""


class AoiTooLargeError(AoiError):
    """The AOI is larger than the configured limit."""


class ConfigError(AgrimonError):
    """A run parameter is invalid."""


class SourceError(AgrimonError):
    """A scene source failed or cannot serve the request."""


class ProductError(AgrimonError):
    """Products cannot be written."""


class ModelError(AgrimonError):
    """A checkpoint, its model card or the features it is given cannot be used."""


class TrainingError(AgrimonError):
    """Training data cannot give an honest model or an honest accuracy figure."""


class OrchestrationError(AgrimonError):
    """The Prefect API a run needs cannot be reached or started."""


class ClusterError(AgrimonError):
    """The Dask cluster lost the workers computing a tile (out of memory, killed)."""


class InterruptedRun(AgrimonError):  # noqa: N818 - it is a stop, not a failure
    """A run was stopped by a signal (Ctrl-C, SIGTERM); nothing was published."""

    exit_code = 130


class LabelError(AgrimonError):
    """Training labels cannot be read, rasterised or written."""


class AssessmentError(AgrimonError):
    """A reference sample cannot give an honest area or accuracy estimate."""


class YieldDataError(AgrimonError):
    """Crop-yield data (yields, crop calendars, predictors) cannot be read or used."""
