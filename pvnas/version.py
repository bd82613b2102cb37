"""The package version, in a module of its own so that every layer can record it without importing the
package facade (``pvnas/__init__.py`` sits above the layers it gathers)."""

__version__ = "0.1.0"
