"""Domain errors of the assistant; the UI shows them as friendly messages, the API as gr.Error."""

from __future__ import annotations

from index_builder.errors import BundleError

__all__ = ["AssistantError", "BundleError", "UnknownProduct", "UnknownUser"]


class AssistantError(Exception):
    """A request the assistant cannot serve; the message says what to do instead."""


class UnknownUser(AssistantError):
    """A user id that is not in the bundle."""


class UnknownProduct(AssistantError):
    """A product id that is not in the catalog."""
