"""Volley: bulk journey triggers with one outcome row per recipient."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
