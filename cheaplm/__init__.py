"""cheaplm: a byte-level language model that keeps its capacity in memory, not in dense compute."""

__version__ = "0.1.0"
