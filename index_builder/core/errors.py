"""Domain errors of the builder and the chat. The CLI turns a ``BuilderError`` into a one-line message and exit
code 2; the UI shows an ``AssistantError`` as a friendly message, the API as ``gr.Error``."""

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


class AssistantError(Exception):
    """A request the assistant cannot serve; the message says what to do instead."""


class UnknownUser(AssistantError):
    """A user id that is not in the bundle."""


class UnknownProduct(AssistantError):
    """A product id that is not in the catalog."""
