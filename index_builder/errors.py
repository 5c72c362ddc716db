"""Domain errors of the index builder; the CLI turns them into a one-line message and exit code 2."""

from __future__ import annotations


class BuilderError(Exception):
    """Base class: a problem the user can fix (the message says how)."""


class InputError(BuilderError):
    """A products or events file cannot be used (missing column, empty, wrong encoding...)."""


class DatasetUnavailable(BuilderError):
    """A named dataset is neither on disk nor downloadable."""


class ModelFitError(BuilderError):
    """A model produced unusable numbers (NaN/inf factors or embeddings)."""


class BundleError(BuilderError):
    """An artifact bundle is missing, of another format, or fails its checksums."""
