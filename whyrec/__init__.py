"""whyrec: graph-based recommendation that can say why."""

__version__ = "0.1.0"
