"""The package version (one place: the root package and export folders read it)."""
__version__ = "0.1.0"
