"""llamaswap's version, in a module of its own so that any module can read it without
importing the package's entry points (``llamaswap/__init__.py`` re-exports it)."""

__version__ = "0.1.0"
