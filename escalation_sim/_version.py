"""The package version (one place; the core layer, importable from every layer)."""
__version__ = "0.1.0"
