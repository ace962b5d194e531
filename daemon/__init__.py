"""redline: a change-watching ingestion daemon for official statements."""

__version__ = "0.1.0"
