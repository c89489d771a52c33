"""The package version: one place, below every layer, so nothing imports the package root for it."""

__version__ = "0.1.0"
