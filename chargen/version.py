"""chargen's version: read by the package metadata (pyproject.toml) and written into checkpoints."""

__version__ = "0.1.0"
