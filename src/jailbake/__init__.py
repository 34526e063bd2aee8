"""jailbake: a small reproducible image builder."""

__version__ = "0.1.0"
