"""The errors a user sees: one line, naming the file, the row or the field."""

from __future__ import annotations

__all__ = ["InputError", "SecretError", "SourceError", "SpecError", "VolleyError"]


class VolleyError(Exception):
    """Base of every error Volley raises on purpose."""


class InputError(VolleyError):
    """The run cannot start: nothing was sent. The CLI exits 2 with this one line."""


class SpecError(InputError):
    """The campaign spec is unusable (field path and reason in the message)."""


class SecretError(SpecError):
    """A secret reference cannot be resolved (the message never holds the secret)."""


class SourceError(InputError):
    """The audience cannot be read (the message names the file)."""
