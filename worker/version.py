"""The package version, in a leaf module: metrics, tracing and the CLI read it without
importing the package's public face (worker/__init__), which names modules that use them."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's version
