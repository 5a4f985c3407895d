"""A handler module that fails while it is imported (not with ImportError)."""

raise RuntimeError("boom at import time")
