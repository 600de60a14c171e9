"""Pandera models: one audience model per vendor, and the outcome record."""
