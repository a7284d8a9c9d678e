"""matcher: fair (FLOP-, parameter- and memory-matched) comparisons of depth-recurrent LMs."""

__version__ = "0.1.0"
